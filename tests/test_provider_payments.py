"""Sessions paid through payment channels, against a real provider and the local ledger."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import open_channel, provider_config

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LedgerError
from jupyter_walnut.ledger.vouchers import Voucher
from jupyter_walnut.provider.config import ConfigError
from jupyter_walnut.provider.node import ProviderNode
from jupyter_walnut.provider.runtimes.process import ProcessRuntime
from jupyter_walnut.renter.provider_client import ProviderAPIError, ProviderClient

pytestmark = pytest.mark.asyncio


async def start(provider, key, deposit=600_000, **channel_args):
    client = ProviderClient(provider.url, key)
    channel = open_channel(provider.ledger, key, provider, deposit=deposit, **channel_args)
    created = await client.create_session(image="python", shape="cpu-small", channel_id=channel)
    await client.wait_running(created["id"])
    return client, created, channel


async def test_a_session_needs_a_channel_that_can_pay(provider, renter_key, ledger):
    client = ProviderClient(provider.url, renter_key)
    other = KeyPair.generate()
    cases = [
        ({}, 402, "channel_id"),
        ({"channel_id": "0x" + "ab" * 32}, 402, "no channel"),
        # a channel paying another provider
        ({"channel_id": ledger.open_channel(
            _funded(ledger, renter_key), KeyPair.generate().address, renter_key.public_key,
            600_000, 1000, 60).channel_id}, 402, "another provider"),
        # someone else's channel
        ({"channel_id": open_channel(ledger, other, provider)}, 402, "another renter"),
        # too small to buy the minimum time
        ({"channel_id": open_channel(ledger, renter_key, provider, deposit=1000)}, 402,
         "needs at least 60000 MIST"),
        # a price below the shape's
        ({"channel_id": open_channel(ledger, renter_key, provider, price=999)}, 402,
         "below this shape"),
        # a challenge period too short for the provider to claim in
        ({"channel_id": open_channel(ledger, renter_key, provider, challenge_period_s=5)}, 402,
         "challenge period"),
    ]
    for request, status, words in cases:
        with pytest.raises(ProviderAPIError) as err:
            await client.create_session(image="python", **request)
        assert err.value.status == status, request
        assert words in err.value.message, request
    assert await client.list_sessions() == []


def _funded(ledger, key):
    ledger.fund(key.address, 10**12)
    return key


async def test_vouchers_are_checked_and_kept(provider, renter_key, ledger):
    client, created, channel = await start(provider, renter_key)
    sid = created["id"]
    ok = Voucher.sign(renter_key, channel, 5000)
    session = await client.send_voucher(sid, ok.amount_mist, ok.signature)
    assert session["voucher_mist"] == 5000
    assert "voucher_signature" not in session
    bad = [
        (Voucher.sign(KeyPair.generate(), channel, 9000), 400, "signature"),  # wrong key
        (Voucher.sign(renter_key, "0x" + "cd" * 32, 9000), 400, "signature"),  # wrong channel
        (Voucher(channel, 9000, ok.signature), 400, "signature"),  # forged amount
        (Voucher.sign(renter_key, channel, 4000), 409, "out-of-order"),  # lower than kept
        (Voucher.sign(renter_key, channel, 600_001), 400, "exceeds the deposit"),
    ]
    for voucher, status, words in bad:
        with pytest.raises(ProviderAPIError) as err:
            await client.send_voucher(sid, voucher.amount_mist, voucher.signature)
        assert err.value.status == status and words in err.value.message
    with pytest.raises(ProviderAPIError) as err:  # truncated signature
        await client.send_voucher(sid, 9000, ok.signature[:40])
    assert err.value.status == 400
    assert provider.store.get(sid).voucher_mist == 5000  # nothing changed
    # another renter cannot pay into (or read) this session
    with pytest.raises(ProviderAPIError) as err:
        intruder = ProviderClient(provider.url, KeyPair.generate())
        await intruder.send_voucher(sid, 6000, Voucher.sign(renter_key, channel, 6000).signature)
    assert err.value.status == 404


async def test_end_of_session_claims_the_voucher_and_refunds_the_rest(provider, renter_key,
                                                                      ledger):
    balance0 = ledger.balance(renter_key.address) if ledger.balance(renter_key.address) else 0
    client, created, channel = await start(provider, renter_key)
    sid = created["id"]
    balance_after_open = ledger.balance(renter_key.address)
    provider_before = ledger.balance(provider.identity.address)
    while provider.store.get(sid).running_ms < 1500:
        await asyncio.sleep(0.05)
    stopped = await client.stop_session(sid)
    cost = stopped["cost_mist"]
    assert cost >= 1500  # 1.5 s at 1000 MIST/s
    final = Voucher.sign(renter_key, channel, cost)
    await client.send_voucher(sid, final.amount_mist, final.signature)
    while not ledger.get_channel(channel).closed:
        await provider.sessions.settle_once()
    ch = ledger.get_channel(channel)
    assert ch.claimed == cost  # the provider got exactly the signed, metered cost
    assert ch.deposited == ch.claimed + ch.refunded == 600_000
    assert ledger.balance(provider.identity.address) - provider_before == cost
    assert ledger.balance(renter_key.address) == balance_after_open + 600_000 - cost
    assert balance0 >= 0
    session = await client.get_session(sid)
    assert session["settlement"] == "settled"
    assert session["claimed_mist"] == cost


async def test_a_renter_who_stops_paying_is_stopped_within_the_grace(provider_factory,
                                                                   renter_key, ledger):
    node = await provider_factory(config=provider_config(
        settlement={"grace_s": 1, "settle_after_s": 1, "min_challenge_period_s": 60}))
    client, created, channel = await start(node, renter_key)
    sid = created["id"]
    while (await client.get_session(sid))["status"] == "running":
        await asyncio.sleep(0.05)
    session = await client.get_session(sid)
    assert "payment fell more than 1s behind" in session["reason"]
    # the provider ran at most grace + one metering tick (0.2 s) unpaid; a second of slack
    # for a loaded event loop still catches a node that ignores the grace
    assert session["cost_mist"] <= 1000 * (1 + 2)
    while not ledger.get_channel(channel).closed:
        await node.sessions.settle_once()
    assert ledger.get_channel(channel).claimed == 0  # nothing was signed, nothing is taken
    assert ledger.get_channel(channel).refunded == 600_000


async def test_deposit_used_up_stops_the_session(provider_factory, renter_key, ledger):
    node = await provider_factory(config=provider_config(
        settlement={"min_prepaid_s": 1, "settle_after_s": 1, "min_challenge_period_s": 60}))
    client, created, channel = await start(node, renter_key, deposit=2_500)
    assert created["max_seconds"] == 2  # 2500 MIST buys 2 s at 1000 MIST/s
    session = await until_ended(client, created["id"])
    assert (session["reason"], session["cost_mist"]) == ("the deposit is used up", 2000)
    with pytest.raises(ProviderAPIError) as err:  # the rest buys no second: never signable
        await client.send_voucher(created["id"], 2_501,
                                  Voucher.sign(renter_key, channel, 2_501).signature)
    assert err.value.status == 400 and "exceeds the deposit" in err.value.message


async def until_ended(client, session_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (session := await client.get_session(session_id))["status"] in ("starting", "running"):
        assert time.monotonic() < deadline, f"session {session_id} did not end"
        await asyncio.sleep(0.05)
    return session


def test_a_channel_check_slower_than_the_challenge_period_is_refused():
    with pytest.raises(ConfigError) as err:
        provider_config(settlement={"channel_check_interval_s": 60,
                                    "min_challenge_period_s": 60})
    assert "settlement.channel_check_interval_s: must be below min_challenge_period_s" in \
        str(err.value)


async def test_long_sessions_are_claimed_while_they_run(provider_factory, renter_key, ledger):
    node = await provider_factory(config=provider_config(settlement={
        "claim_interval_s": 1, "channel_check_interval_s": 1, "min_challenge_period_s": 60}))
    client, created, channel = await start(node, renter_key)
    sid = created["id"]
    while node.store.get(sid).running_ms < 1000:
        await asyncio.sleep(0.05)
    signed = node.store.get(sid).cost_mist
    await client.send_voucher(sid, signed, Voucher.sign(renter_key, channel, signed).signature)
    deadline = time.monotonic() + 30
    while ledger.get_channel(channel).claimed < signed:
        assert time.monotonic() < deadline, "the running session's voucher was not claimed"
        await asyncio.sleep(0.05)
    assert ledger.get_channel(channel).claimed == signed
    assert (await client.get_session(sid))["status"] == "running"  # claimed, still served


class ClaimsFail:
    """A ledger whose node does not answer claims while `down` (the rest works)."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger
        self.down = True

    def __getattr__(self, name):
        return getattr(self.ledger, name)

    def claim(self, *args):
        if self.down:
            raise LedgerError("E_NODE", "the ledger node does not answer")
        return self.ledger.claim(*args)


async def test_settlement_waits_out_an_unreachable_ledger(tmp_path, renter_key, ledger):
    flaky = ClaimsFail(ledger)
    node = ProviderNode(provider_config(), KeyPair.generate(), tmp_path / "p",
                        runtime=ProcessRuntime(tmp_path / "p" / "sessions"), ledger=flaky)
    node.sessions.metering_interval_s = node.sessions.watch_interval_s = 0.2
    node.url = f"http://127.0.0.1:{await node.start(host='127.0.0.1', port=0)}"
    node.ledger = ledger  # for start(): open_channel reads it
    try:
        client, created, channel = await start(node, renter_key)
        sid = created["id"]
        while node.store.get(sid).running_ms < 1000:
            await asyncio.sleep(0.05)
        cost = (await client.stop_session(sid))["cost_mist"]
        await client.send_voucher(sid, cost, Voucher.sign(renter_key, channel, cost).signature)
        for _ in range(3):  # each pass fails on the claim and changes nothing
            await node.sessions.settle_once()
        assert node.store.get(sid).settlement == "open"
        ch = ledger.get_channel(channel)
        assert (ch.status, ch.claimed, ch.refunded) == ("open", 0, 0)
        flaky.down = False
        await node.sessions.settle_once()
        ch = ledger.get_channel(channel)
        assert (ch.closed, ch.claimed, ch.refunded) == (True, cost, 600_000 - cost)
        assert node.store.get(sid).settlement == "settled"
    finally:
        await node.stop(stop_sessions=True)
