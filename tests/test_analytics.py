"""Analytics for both sides with real providers: the provider's earnings, utilisation,
sessions served and failed starts (history, CLI, Prometheus); the renter's history, spend
by day and CSV export through the server's REST API."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys

import pytest
from conftest import FUNDS, ThreadedProvider, on_settled, provider_config
from tornado.httpclient import AsyncHTTPClient

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.money import format_sui
from jupyter_walnut.provider.analytics import day_of, history
from jupyter_walnut.provider.config import default_config_text
from jupyter_walnut.provider.runtimes.base import RuntimeError_
from jupyter_walnut.renter.manager import RenterError, RenterManager

pytestmark = pytest.mark.timeout(240)

PRICE = 1000
SETTLE = {"settle_after_s": 30}  # the final voucher settles, not a timeout


@pytest.mark.asyncio
async def test_provider_sees_what_it_earns(provider_factory, ledger, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    home = tmp_path / "phome"
    home.mkdir()
    (home / "provider.toml").write_text(default_config_text("earner", 0, 2, 4096))
    node = await provider_factory(provider_config(settlement=SETTLE), state_dir=home / "state")
    settled = on_settled(node)
    key = KeyPair.generate()
    ledger.fund(key.address, FUNDS)
    renter = RenterManager(tmp_path / "renter", [node.url], key=key, ledger=ledger)

    served = await renter.launch(node.url, "cpu-small", budget_mist=300 * PRICE)
    await renter.stop(served.id)
    assert await asyncio.wait_for(settled.get(), 30) == served.id
    real_start = node.runtime.start

    async def broken_start(spec):
        raise RuntimeError_("the image could not be pulled")

    node.runtime.start = broken_start  # the next start fails inside the provider
    with pytest.raises(RenterError, match="failed to start"):
        await renter.launch(node.url, "cpu-small", budget_mist=300 * PRICE)
    node.runtime.start = real_start

    claimed = ledger.get_channel(served.channel_id).claimed
    h = history(node.store, max_sessions=3)
    assert claimed > 0
    assert (h["sessions_served"], h["failed_starts"]) == (1, 1)
    assert h["claimed_mist"] == claimed and h["pending_mist"] == 0
    today = h["by_day"][-1]
    assert today["day"] == day_of(served.created_at)
    assert today["claimed_mist"] == claimed and today["failed_starts"] == 1
    assert today["busy_seconds"] >= 1 and today["utilisation_pct"] > 0

    # Prometheus, as a scraper reads it
    resp = await AsyncHTTPClient().fetch(node.url + "/metrics")
    text = resp.body.decode()
    assert f"walnut_earnings_claimed_mist {float(claimed)}" in text
    assert "walnut_sessions_served 1.0" in text
    assert "walnut_sessions_failed_start 1.0" in text

    # the CLI, as the provider's owner runs it (the node may be up or down)
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "jupyter_walnut.provider.cli", "--home", str(home), "status",
        "--history"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 served, 1 failed to start" in done.stdout
    assert f"{claimed:>14}" in done.stdout  # today's claimed MIST
    assert f"Earnings  {format_sui(claimed)} claimed, 0 SUI pending" in done.stdout
    as_json = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "jupyter_walnut.provider.cli", "--home", str(home), "status",
        "--history", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(as_json.stdout)["claimed_mist"] == claimed


# --- the renter's side, through the Jupyter Server extension --------------------------------

@pytest.fixture
def provider(tmp_path, ledger):
    node = ThreadedProvider(tmp_path / "phome" / "state", ledger,
                            config=provider_config(settlement=SETTLE))
    yield node
    node.stop()


@pytest.fixture
def jp_server_config(provider, tmp_path, ledger, monkeypatch):
    monkeypatch.setenv("WALNUT_PROVIDER_HOME", str(tmp_path / "phome"))  # it also provides
    home = tmp_path / "renter"
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    ledger.fund(key.address, FUNDS)
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [provider.url], "walnut_home": str(home),
                          "ledger_path": str(ledger.path), "poll_interval": 0.2,
                          "challenge_period": 60}}


async def test_renter_history_spend_and_csv(jp_fetch, provider):
    empty = json.loads((await jp_fetch("walnut", "analytics", "history")).body)
    assert empty["sessions"] == [] and empty["spend_by_day"] == []
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": provider.url, "shape": "cpu-small", "budget_mist": 300 * PRICE}))
    session = json.loads(resp.body)
    stopped = json.loads((await jp_fetch("walnut", "sessions", session["id"],
                                         method="DELETE")).body)

    data = json.loads((await jp_fetch("walnut", "analytics", "history")).body)
    [row] = data["sessions"]
    assert row["id"] == session["id"] and row["node"] == "test-node"
    assert row["verification"] == "passed"
    assert row["cost_mist"] == stopped["cost_mist"] > 0
    assert data["total_mist"] == stopped["cost_mist"]
    assert data["spend_by_day"][-1]["cumulative_mist"] == stopped["cost_mist"]

    resp = await jp_fetch("walnut", "analytics", "history.csv")
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.body.decode())))
    assert rows[0]["id"] == session["id"] and rows[0]["verification"] == "passed"
    assert int(rows[0]["cost_mist"]) == stopped["cost_mist"]

    providers = json.loads((await jp_fetch("walnut", "analytics", "providers")).body)
    [rep] = providers["providers"]
    assert rep["evidence"]["completed"] == 1 and rep["reliability"] is not None

    offers = json.loads((await jp_fetch("walnut", "offers")).body)["offers"]
    assert all("reliability" in o and "verified" in o for o in offers)
    assert offers[0]["verified"] is True

    mine = json.loads((await jp_fetch("walnut", "analytics", "provider")).body)
    assert mine["enabled"] is True and mine["sessions_served"] == 1
