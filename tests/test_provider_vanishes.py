"""A provider that disappears for good: the renter sees it, stops paying, and recovers the
unclaimed deposit after the channel's challenge period."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_walnut.keys import KeyPair
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.manager import RenterManager

pytestmark = pytest.mark.asyncio


async def test_vanished_provider_deposit_comes_back_after_the_challenge(provider_factory,
                                                                        ledger, tmp_path):
    node = await provider_factory()
    clock = {"ms": 0}
    # the renter's view of the same ledger file, on a clock the test moves
    renter_ledger = LocalLedger(ledger.path, clock=lambda: clock["ms"])
    key = KeyPair.generate()
    ledger.fund(key.address, 10**9)
    renter = RenterManager(tmp_path / "renter", [node.url], key=key, ledger=renter_ledger,
                           challenge_period_s=60)
    renter.unreachable_timeout_s = 0.5
    renter.payments.refund_after_s = 0
    session = await renter.launch(node.url, "cpu-small", budget_mist=300_000)
    while renter.get(session.id).extra.get("voucher_mist", 0) == 0:
        await renter.refresh()  # the renter pays as metered time passes
        await asyncio.sleep(0.1)
    paid = renter.get(session.id).extra["voucher_mist"]
    assert ledger.balance(key.address) == 10**9 - 300_000

    await node.stop(stop_sessions=False)  # the provider vanishes without settling
    while renter.get(session.id).status == "running":
        await renter.refresh()
        await asyncio.sleep(0.1)
    ended = renter.get(session.id)
    assert ended.status == "failed" and "unreachable" in ended.reason
    assert ended.extra["voucher_mist"] == paid  # no voucher after it went quiet

    await renter.settle()  # asks to close: the challenge period starts now
    assert renter.get(session.id).extra["settlement"] == "closing"
    await renter.settle()
    assert renter.get(session.id).extra["settlement"] == "closing"  # not before its end
    clock["ms"] += 61_000
    await renter.settle()
    state = renter.get(session.id).extra
    assert state["settlement"] == "settled"
    assert state["claimed_mist"] == 0 and state["refunded_mist"] == 300_000
    assert ledger.balance(key.address) == 10**9  # every MIST back
    for handle in await node.runtime.adopt():  # the vanished node's gateway: not ours to keep
        await node.runtime.stop(handle)


async def test_a_locked_ledger_is_a_clear_error_that_changes_nothing(provider_factory, ledger,
                                                                     tmp_path):
    import sqlite3

    from jupyter_walnut.renter.manager import RenterError

    node = await provider_factory()
    key = KeyPair.generate()
    ledger.fund(key.address, 10**9)
    renter_ledger = LocalLedger(ledger.path)
    renter_ledger._db.execute("PRAGMA busy_timeout = 200")  # give up fast in this test
    renter = RenterManager(tmp_path / "renter", [node.url], key=key, ledger=renter_ledger)
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the ledger's write lock
    try:
        with pytest.raises(RenterError) as err:
            await renter.launch(node.url, "cpu-small", budget_mist=300_000)
        assert err.value.status == 503 and "ledger is unavailable" in err.value.message
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert renter.store.list() == [] and node.store.list() == []
    assert ledger.balance(key.address) == 10**9  # nothing moved
    session = await renter.launch(node.url, "cpu-small", budget_mist=300_000)  # and it recovers
    assert session.status == "running"
    await renter.stop(session.id)
