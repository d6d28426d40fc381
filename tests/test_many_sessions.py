"""Many idle sessions of one renter on one provider keep being paid (issue #18).

A renter followed and paid its sessions one after another, and on the Docker runtime each
status read took ~2 s (container statistics read on the request): with 16 sessions a pass
outlasted the provider's 30 s grace and sessions were stopped for "payment fell more than
30s behind". Here 32 sessions of one renter, at the default intervals (the renter's refresh
every 2 s, the provider's metering every 1 s, 30 s of grace), stay paid for 5 minutes.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio
from conftest import FUNDS, provider_config
from stack import StackNode

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.renter.manager import RenterManager

SESSIONS = 32
IDLE_S = 300  # the figure: 5 minutes of default metering and voucher intervals
PRICE = 1000  # MIST per second
DEFAULT_METERING_S = 1.0  # SessionManager.metering_interval_s, as a provider runs it


@pytest.fixture
def node(tmp_path, ledger):
    config = provider_config(
        shapes=[{"name": "cpu-tiny", "gpus": 0, "cpus": 0.25, "memory_mb": 512,
                 "disk_mb": 256, "price_per_second_mist": PRICE}],
        availability={"max_sessions": SESSIONS})
    node = StackNode(tmp_path / "provider", ledger, config=config,
                     metering_interval_s=DEFAULT_METERING_S)
    yield node
    node.stop()


@pytest_asyncio.fixture
async def renter(tmp_path, ledger, node, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # its kernelspecs
    key = KeyPair.generate()
    ledger.fund(key.address, FUNDS)
    manager = RenterManager(tmp_path / "renter", [node.pinned_url], key=key, ledger=ledger,
                            use_registry=False, challenge_period_s=60)
    manager.start_polling()  # the payment loop, as the extension starts it
    yield manager
    await manager.shutdown(stop_sessions=True)


def unpaid_seconds(rec) -> float:
    return (rec.cost_mist - rec.voucher_mist) / rec.price_mist_per_second


@pytest.mark.timeout(IDLE_S + 900)  # launching 32 gateways on 2 cores takes minutes
@pytest.mark.asyncio
async def test_32_idle_sessions_stay_paid_for_5_minutes(node, renter):
    assert renter.poll_interval_s == 2.0  # the defaults the issue is about, not shrunk
    gate = asyncio.Semaphore(4)

    async def launch():
        async with gate:  # the provider starts a few gateways at a time, as users would
            return await renter.launch(node.pinned_url, "cpu-tiny", verify=False,
                                       budget_mist=PRICE * (IDLE_S + 900))

    ids = {s.id for s in await asyncio.gather(*(launch() for _ in range(SESSIONS)))}
    # vouchers keep up: never more than half the provider's grace behind (a refresh pass
    # trails by 3-5 s; on a loaded 2-core machine more, so no tighter bound than that).
    # Followed one at a time at ~2 s a status read, 32 sessions trailed by over a minute.
    allowed_s = node.config.settlement.grace_seconds / 2
    worst = 0.0
    deadline = time.monotonic() + IDLE_S
    while time.monotonic() < deadline:  # watch the provider's own books until the end
        books = {r.id: r for r in node.store.list() if r.id in ids}
        ended = {r.id: r.reason for r in books.values() if r.status != "running"}
        assert not ended, f"{len(ended)} of {SESSIONS} sessions ended: {set(ended.values())}"
        lagging = {sid: unpaid_seconds(r) for sid, r in books.items()
                   if unpaid_seconds(r) > allowed_s}
        assert not lagging, (f"vouchers of {len(lagging)} sessions trail the metered cost by "
                             f"up to {max(lagging.values()):.1f}s (allowed {allowed_s}s)")
        worst = max([worst, *(unpaid_seconds(r) for r in books.values())])
        await asyncio.sleep(0.5)  # polling the provider's state until the deadline
    for s in renter.store.list(statuses=("running",)):
        assert s.voucher_mist > PRICE * (IDLE_S - allowed_s)  # paid all along, by the renter
    assert len(renter.store.list(statuses=("running",))) == SESSIONS
    print(f"{SESSIONS} sessions idle {IDLE_S}s: worst unpaid lag {worst:.1f}s")
