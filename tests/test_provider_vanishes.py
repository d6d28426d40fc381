"""A provider that disappears for good: the renter sees it, stops paying, and recovers the
unclaimed deposit after the channel's challenge period.

On the default stack (a Docker session behind TLS, the renter pinning the certificate);
`WALNUT_TEST_RUNTIME=process` / `WALNUT_TEST_TLS=off` run the cheap leg.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from stack import StackNode

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LedgerError, LocalLedger
from jupyter_walnut.renter.manager import RenterManager

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


@pytest.fixture
def node(tmp_path, ledger):
    stack = StackNode(tmp_path / "provider", ledger)
    yield stack
    stack.stop()
    # a vanished node's gateway is still running: a later serve adopts it and stops it
    StackNode(stack.state_dir, ledger, identity=stack.identity, config=stack.config,
              tls=False).stop()


async def refresh_until(renter: RenterManager, done, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await renter.refresh()
        await asyncio.sleep(0.1)  # polling the provider, bounded by the deadline


async def test_vanished_provider_deposit_comes_back_after_the_challenge(node, ledger, tmp_path):
    clock = {"ms": 0}
    # the renter's view of the same ledger file, on a clock the test moves
    renter_ledger = LocalLedger(ledger.path, clock=lambda: clock["ms"])
    key = KeyPair.generate()
    ledger.fund(key.address, 10**9)
    renter = RenterManager(tmp_path / "renter", [node.pinned_url], key=key,
                           ledger=renter_ledger, challenge_period_s=60)
    renter.unreachable_timeout_s = 0.5
    renter.payments.refund_after_s = 0
    session = await renter.launch(node.pinned_url, "cpu-small", budget_mist=300_000)
    # the renter pays as metered time passes
    await refresh_until(renter, lambda: renter.get(session.id).voucher_mist,
                        "a voucher")
    paid = renter.get(session.id).voucher_mist
    assert ledger.balance(key.address) == 10**9 - 300_000

    node.stop(stop_sessions=False)  # the provider vanishes without settling
    await refresh_until(renter, lambda: renter.get(session.id).status != "running",
                        "the renter to see the provider gone")
    ended = renter.get(session.id)
    assert ended.status == "failed"
    assert ended.reason.startswith("the provider has been unreachable for "), ended.reason
    assert ended.voucher_mist == paid  # no voucher after it went quiet

    await renter.settle()  # asks to close: the challenge period starts now
    assert renter.get(session.id).settlement == "closing"
    await renter.settle()
    assert renter.get(session.id).settlement == "closing"  # not before its end
    clock["ms"] += 61_000
    await renter.settle()
    state = renter.get(session.id)
    assert state.settlement == "settled"
    assert state.claimed_mist == 0 and state.refunded_mist == 300_000
    assert ledger.balance(key.address) == 10**9  # every MIST back


async def test_a_locked_ledger_is_a_clear_error_that_changes_nothing(node, ledger, tmp_path):
    key = KeyPair.generate()
    ledger.fund(key.address, 10**9)
    renter_ledger = LocalLedger(ledger.path)
    renter_ledger._db.execute("PRAGMA busy_timeout = 200")  # give up fast in this test
    renter = RenterManager(tmp_path / "renter", [node.pinned_url], key=key, ledger=renter_ledger)
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the ledger's write lock
    try:
        with pytest.raises(LedgerError) as err:
            await renter.launch(node.pinned_url, "cpu-small", budget_mist=300_000)
        assert err.value.status == 503
        assert err.value.message == "the local ledger is unavailable: database is locked"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert renter.store.list() == [] and node.store.list() == []
    assert ledger.balance(key.address) == 10**9  # nothing moved
    session = await renter.launch(node.pinned_url, "cpu-small", budget_mist=300_000)
    assert session.status == "running"  # and it recovers
    await renter.stop(session.id)
