"""A hostile renter against the default stack (Docker runtime, TLS with a pinned certificate, a
real LocalLedger): it must never get compute or money it did not pay for.

The renter plays every trick the ledger allows: one channel in several spellings for several
sessions at once, a second create meant to refund the first, a close request (and a finalize
after the challenge period) under a running session, vouchers on a closed channel. Top-ups,
the maximum duration and the end of the deposit are checked against exact ledger balances
(integer MIST). The ledger's clock is the test's, so a challenge period passes without a wait.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from conftest import FUNDS, open_channel, provider_config
from stack import StackNode, stack_runtime

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LedgerError, LocalLedger
from jupyter_walnut.ledger.vouchers import Voucher
from jupyter_walnut.renter.manager import RenterManager
from jupyter_walnut.renter.provider_client import ProviderAPIError

pytestmark = [pytest.mark.asyncio, pytest.mark.docker, pytest.mark.timeout(300)]

PRICE = 1000  # MIST per second
DEPOSIT = 600_000
CHALLENGE_S = 60


class LedgerClock:
    """Wall-clock milliseconds plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def pass_challenge_period(self) -> None:
        self.offset_ms += (CHALLENGE_S + 1) * 1000


@pytest.fixture(scope="module")
def clock() -> LedgerClock:
    return LedgerClock()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory, clock):
    with LocalLedger(tmp_path_factory.mktemp("ledger") / "ledger.sqlite", clock=clock) as led:
        yield led


@pytest.fixture(scope="module")
def stack(tmp_path_factory, ledger):
    config = provider_config(
        provider={"name": "money-node", "runtime": stack_runtime()},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": PRICE},
                # no test machine has 8 free GPUs: a create on it fails after the channel check
                {"name": "gpu-8", "gpus": 8, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": PRICE}],
        availability={"max_sessions": 6},
        settlement={"settle_after_s": 1, "min_challenge_period_s": CHALLENGE_S,
                    "min_prepaid_s": 1, "channel_check_interval_s": 1,
                    "claim_interval_s": 3600})
    node = StackNode(tmp_path_factory.mktemp("provider"), ledger, config=config,
                     metering_interval_s=0.25)
    yield node
    node.stop()


async def wait_for(condition, what: str, timeout: float = 60.0):
    """Poll `condition` (sync or async) until it is truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def renter(ledger) -> KeyPair:
    key = KeyPair.generate()
    ledger.fund(key.address, FUNDS)
    return key


async def launch(stack, key, channel: str, **request) -> dict:
    client = stack.client(key)
    created = await client.create_session(image="python", shape="cpu-small", channel_id=channel,
                                          **request)
    await client.wait_running(created["id"])
    return created


async def stopped(stack, key, session_id: str) -> dict:
    client = stack.client(key)

    async def ended():
        session = await client.get_session(session_id)
        return session if session["status"] not in ("starting", "running") else None

    return await wait_for(ended, f"session {session_id} to stop")


async def pay(stack, key, session_id: str, channel: str, amount: int) -> dict:
    voucher = Voucher.sign(key, channel, amount)
    return await stack.client(key).send_voucher(session_id, amount, voucher.signature)


def spellings(channel: str) -> list[str]:
    digits = channel[2:]
    return [channel, "0x" + digits.upper(), digits, digits.upper(), "0X" + digits]


async def test_one_channel_pays_for_one_session_in_any_spelling(stack, ledger):
    key = renter(ledger)
    channel = open_channel(ledger, key, stack, deposit=DEPOSIT)
    # every spelling at once, each on its own connection
    results = await asyncio.gather(
        *(stack.client(key).create_session(image="python", shape="cpu-small", channel_id=name)
          for name in spellings(channel)), return_exceptions=True)
    created = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, ProviderAPIError)]
    assert len(created) == 1, results
    assert [(e.status, "already paid for a session" in e.message) for e in refused] == \
        [(409, True)] * 4
    assert [r.id for r in stack.store.list(renter=key.address)] == [created[0]["id"]]
    assert stack.store.get(created[0]["id"]).channel_id == channel  # kept in one spelling
    await stack.client(key).wait_running(created[0]["id"])
    # a second create that would fail after the channel check (no GPUs) refunds nothing
    with pytest.raises(ProviderAPIError) as err:
        await stack.client(key).create_session(image="python", shape="gpu-8",
                                               channel_id=channel[2:].upper())
    assert err.value.status == 409
    ch = ledger.get_channel(channel)
    assert (ch.status, ch.locked, ch.refunded) == ("open", DEPOSIT, 0)
    assert ledger.balance(key.address) == FUNDS - DEPOSIT
    assert (await stack.client(key).get_session(created[0]["id"]))["status"] == "running"
    await stack.client(key).stop_session(created[0]["id"])


async def test_a_closing_channel_starts_no_session(stack, ledger):
    key = renter(ledger)
    channel = open_channel(ledger, key, stack, deposit=DEPOSIT)
    ledger.request_close(key, channel)
    with pytest.raises(ProviderAPIError) as err:
        await stack.client(key).create_session(image="python", shape="cpu-small",
                                               channel_id=channel)
    assert err.value.status == 402 and "closing" in err.value.message
    assert stack.store.list(renter=key.address) == []
    assert ledger.get_channel(channel).status == "closing"  # the renter's to finalize


async def test_a_close_request_is_claimed_at_once_and_stops_the_session(stack, ledger, clock):
    key = renter(ledger)
    channel = open_channel(ledger, key, stack, deposit=DEPOSIT)
    created = await launch(stack, key, channel)
    sid = created["id"]
    await wait_for(lambda: stack.store.get(sid).running_ms >= 1000, "a metered second")
    signed = stack.store.get(sid).cost_mist
    await pay(stack, key, sid, channel, signed)
    provider_before = ledger.balance(stack.identity.address)

    ledger.request_close(key, channel)  # the renter, straight to the ledger
    session = await stopped(stack, key, sid)
    assert "asked the ledger to close" in session["reason"]
    assert ledger.get_channel(channel).claimed == signed  # claimed inside the challenge period
    with pytest.raises(ProviderAPIError) as err:  # the gateway serves no more
        await stack.client(key).gateway(sid, created["access_token"], "GET", "api/kernels")
    assert err.value.status == 409

    clock.pass_challenge_period()
    try:  # the renter finalizes: it gets back the rest, never what was claimed
        ledger.finalize_close(key, channel)
    except LedgerError as exc:
        assert exc.code == "E_CHANNEL_CLOSED"  # the provider closed it first
    ch = ledger.get_channel(channel)
    assert (ch.closed, ch.claimed, ch.refunded) == (True, signed, DEPOSIT - signed)
    assert ledger.balance(key.address) == FUNDS - signed
    assert ledger.balance(stack.identity.address) - provider_before == signed


async def test_a_channel_closed_under_a_session_stops_it_as_a_recorded_loss(stack, ledger,
                                                                          clock, caplog):
    key = renter(ledger)
    channel = open_channel(ledger, key, stack, deposit=DEPOSIT)
    sid = (await launch(stack, key, channel))["id"]
    await wait_for(lambda: stack.store.get(sid).running_ms >= 1000, "a metered second")
    signed = stack.store.get(sid).cost_mist
    await pay(stack, key, sid, channel, signed)

    async def close_before_the_provider_looks():
        # on the provider's own loop, so none of its coroutines sees the channel closing:
        # as if the provider was down for the whole challenge period
        ledger.request_close(key, channel)
        clock.pass_challenge_period()
        ledger.finalize_close(key, channel)

    with caplog.at_level(logging.ERROR, logger="walnut.provider.settlement"):
        stack.run(close_before_the_provider_looks())
        session = await stopped(stack, key, sid)
        await wait_for(lambda: stack.store.get(sid).settlement != "open",
                       "the settlement to be recorded")
    assert "channel was closed on the ledger" in session["reason"]
    rec = stack.store.get(sid)
    assert (rec.settlement, rec.lost_mist) == ("lost", signed)
    assert any("lost" in r.getMessage() and sid in r.getMessage() for r in caplog.records)
    stack.node.refresh_metrics()
    assert stack.node.metrics.registry.get_sample_value("walnut_earnings_lost_mist") >= signed

    with pytest.raises(ProviderAPIError) as err:  # vouchers for a closed channel are refused
        await pay(stack, key, sid, channel, signed + 1000)
    assert err.value.status == 409 and "closed" in err.value.message
    events = len(ledger.events())
    stack.run(stack.sessions.settle_once())  # a final loss: no claim is tried again
    assert len(ledger.events()) == events and stack.store.get(sid).settlement == "lost"
    assert ledger.get_channel(channel).refunded == DEPOSIT


async def test_a_top_up_extends_the_running_session_and_is_paid(stack, ledger, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # its kernelspecs
    key = renter(ledger)
    manager = RenterManager(tmp_path / "renter", provider_urls=[stack.pinned_url], key=key,
                            ledger=ledger)
    manager.use_registry = False
    provider_before = ledger.balance(stack.identity.address)
    session = await manager.launch(stack.pinned_url, "cpu-small", budget_mist=4 * PRICE,
                                   verify=False)
    assert session.max_seconds == 4
    # a renter's word is not a deposit: asking without paying extends nothing
    claimed = await stack.client(key).top_up_session(session.id)
    assert (claimed["max_seconds"], claimed["deposit_mist"]) == (4, 4 * PRICE)

    topped = await manager.top_up(session.id, 4 * PRICE)
    assert (topped.max_seconds, topped.budget_mist) == (8, 8 * PRICE)
    rec = stack.store.get(session.id)
    assert (rec.max_seconds, rec.deposit_mist) == (8, 8 * PRICE)

    async def ended():  # the renter pays as it runs, as the server's poller does
        await manager.refresh()
        return manager.get(session.id).status != "running"

    await wait_for(lambda: stack.store.get(session.id).running_ms > 4500,
                   "the session to run past what the first deposit bought")
    assert stack.store.get(session.id).status == "running"
    async def settled():
        await manager.refresh()
        return manager.get(session.id).settlement == "settled"

    await wait_for(ended, "the topped-up deposit to be used up")
    await wait_for(settled, "the settlement")
    assert manager.get(session.id).reason == "the deposit is used up"
    ch = ledger.get_channel(session.channel_id)
    assert (ch.deposited, ch.claimed, ch.refunded) == (8 * PRICE, 8 * PRICE, 0)
    assert ledger.balance(key.address) == FUNDS - 8 * PRICE
    assert ledger.balance(stack.identity.address) - provider_before == 8 * PRICE
    await manager.shutdown()


@pytest.mark.parametrize(("deposit", "max_seconds", "reason", "charged"), [
    (10 * PRICE, 2, "maximum duration reached", 2 * PRICE),
    (3 * PRICE + 500, None, "the deposit is used up", 3 * PRICE),  # 500 buys no second
])
async def test_a_session_stops_at_its_limit_and_is_charged_exactly(stack, ledger, deposit,
                                                                   max_seconds, reason, charged):
    key = renter(ledger)
    channel = open_channel(ledger, key, stack, deposit=deposit)
    provider_before = ledger.balance(stack.identity.address)
    request = {"max_seconds": max_seconds} if max_seconds else {}
    sid = (await stack.client(key).create_session(image="python", shape="cpu-small",
                                                  channel_id=channel, **request))["id"]
    session = await stopped(stack, key, sid)
    assert (session["reason"], session["cost_mist"]) == (reason, charged)
    await pay(stack, key, sid, channel, charged)  # the renter's final voucher
    await wait_for(lambda: ledger.get_channel(channel).closed, "the settlement")
    ch = ledger.get_channel(channel)
    assert (ch.claimed, ch.refunded) == (charged, deposit - charged)
    assert ledger.balance(key.address) == FUNDS - charged
    assert ledger.balance(stack.identity.address) - provider_before == charged
