"""Away mode from the launch (issue #17): the renter server's REST checks the away budget and
time before anything is paid, then turns it on once the session runs; DELETE turns it off.
On the default stack; `WALNUT_TEST_RUNTIME=process` / `WALNUT_TEST_TLS=off` run the cheap leg.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from stack import renter_server_config
from test_away import PRICE, node  # noqa: F401 (node: the provider fixture)
from tornado.httpclient import HTTPClientError

pytestmark = [pytest.mark.timeout(420)]


@pytest.fixture
def jp_server_config(node, tmp_path, ledger):  # noqa: F811
    return renter_server_config(tmp_path / "renter-rest", ledger.path, [node.pinned_url],
                                RenterManager={"verify_launches": False})


async def test_away_at_launch_bad_values_refused_before_paying(jp_fetch, node):  # noqa: F811
    async def launch(**fields):
        resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
            {"provider_url": node.pinned_url, "shape": "cpu-small", "budget_mist": 900 * PRICE,
             **fields}), request_timeout=180)
        return json.loads(resp.body)

    balance = json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"]
    for away in ({"budget_mist": 0, "seconds": 3600}, {"budget_mist": 5000, "seconds": 1},
                 {"budget_mist": "lots", "seconds": 3600}, {"hours": 2}, [5]):
        with pytest.raises(HTTPClientError) as err:
            await launch(away=away)
        assert err.value.code == 400, away
        assert json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"] == []
    assert json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"] == balance

    s = await launch(away={"budget_mist": 120 * PRICE, "seconds": 7200})
    assert s["away"]["budget_mist"] == 120 * PRICE and "0.00012 SUI" in s["away"]["trust_bound"]
    rec = node.store.get(s["id"])
    assert 0 < rec.away_top_mist <= rec.voucher_mist + 120 * PRICE
    off = json.loads((await jp_fetch("walnut", "sessions", s["id"], "away",
                                     method="DELETE")).body)
    assert off["away"] is None and node.store.get(s["id"]).away_top_mist == 0
    again = json.loads((await jp_fetch("walnut", "sessions", s["id"], "away", method="POST",
                                       body=json.dumps({"budget_mist": 60 * PRICE,
                                                        "seconds": 600}))).body)
    assert again["away"]["budget_mist"] == 60 * PRICE  # a smaller bound replaces the ladder
    assert node.store.get(s["id"]).away_top_mist <= node.store.get(s["id"]).voucher_mist \
        + 60 * PRICE
    # stopped while away: the final voucher, not a rung, pays the metered cost
    await jp_fetch("walnut", "sessions", s["id"], method="DELETE", request_timeout=200)
    deadline = time.monotonic() + 120
    while not node.store.get(s["id"]).settlement.final:
        assert time.monotonic() < deadline, "never settled"
        await asyncio.sleep(0.1)  # polling the provider's store, bounded by the deadline
    rec = node.store.get(s["id"])
    assert rec.claimed_mist == rec.cost_mist
