"""Property tests of the money rules: random interleavings of vouchers (valid, stale, over
the deposit, forged, tampered), top-ups, stops, close requests, finalizes, channel watching,
claims, settlement and provider restarts (clean, or a crash) with an outage, on an in-memory
clock, against the real LocalLedger (a SQLite file) and the provider's real SessionManager
and ProviderSettlement (only the gateway is a stand-in: no container to wait for).

After every step: the provider never claims more than the renter signed, nor more than the
metered cost; a running session is never more than the grace period unpaid and is metered
for exactly the time it was served (a provider outage is not charged); nothing is metered
after the end; every MIST deposited (top-ups included) is claimed, refunded or still locked,
and the two accounts agree with the channel, in exact integers."""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from conftest import provider_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LedgerError, LocalLedger
from jupyter_walnut.ledger.vouchers import Voucher
from jupyter_walnut.provider import admission, metering, session_settlement, sessions
from jupyter_walnut.provider.hardware import Hardware
from jupyter_walnut.provider.runtimes.base import Runtime, RuntimeHandle, RuntimeState
from jupyter_walnut.provider.sessions import SessionError, SessionManager, SessionRequest
from jupyter_walnut.provider.settlement import PaymentError, ProviderSettlement
from jupyter_walnut.provider.store import SessionStore

FUNDS = 10**12
PRICE = 1000  # cpu-small in provider_config()
MAX_STEP_S = 20  # the longest metering interval a sequence uses
EXAMPLES = 600  # sequences per run: well under a minute on two busy cores
SEQUENCES_RUN = [0]
# the provider's session modules that read `time`: all of them run on the test's clock
CLOCKED_MODULES = (admission, metering, session_settlement, sessions)


class FakeClock:
    """Wall and monotonic time the test moves by hand (milliseconds, exact)."""

    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def time(self) -> float:
        return self.ms / 1000

    def monotonic(self) -> float:
        return self.ms / 1000

    def now_ms(self) -> int:
        return self.ms


class StandInRuntime(Runtime):
    """Gateways that start at once and outlive provider restarts, like containers do."""

    name = "stand-in"

    def __init__(self) -> None:
        self.running: set[str] = set()

    async def start(self, spec) -> RuntimeHandle:
        self.running.add(spec.session_id)
        return RuntimeHandle(spec.session_id, "http://127.0.0.1:9", spec.session_id)

    async def stop(self, handle: RuntimeHandle) -> None:
        self.running.discard(handle.session_id)

    async def state(self, handle: RuntimeHandle) -> RuntimeState:
        return RuntimeState(handle.session_id in self.running, "gone")

    async def adopt(self) -> list[RuntimeHandle]:
        return [RuntimeHandle(s, "http://127.0.0.1:9", s) for s in sorted(self.running)]


class ReadyManager(SessionManager):
    async def _wait_ready(self, handle, token) -> None:
        return None  # the stand-in gateway has no HTTP side to poll


@dataclass
class World:
    """The real ledger and provider, and what the test knows happened."""

    root: Path
    clock: FakeClock
    ledger: LocalLedger
    runtime: StandInRuntime
    renter: KeyPair
    provider: KeyPair
    channel_id: str
    deposited: int  # every MIST the renter put in the channel
    manager: SessionManager | None = None
    session_id: str = ""
    served_ms: int = 0  # time the session was running while its provider was up
    max_signed: int = 0  # the largest voucher the renter's key ever signed
    ended_ms: int | None = None  # metered time when the session ended

    def open_manager(self) -> SessionManager:
        config = provider_config(settlement={"settle_after_s": 1, "min_challenge_period_s": 60,
                                             "claim_interval_s": 10})
        manager = ReadyManager(
            config, self.runtime, SessionStore(self.root / "provider.sqlite"),
            lambda: Hardware(cpu_count=2, memory_mb=4096, disk_free_gb=10), self.root,
            settlement=ProviderSettlement(self.ledger, self.provider, config.settlement))
        manager.metering_interval_s = manager.watch_interval_s = 3600  # driven by hand
        self.manager = manager
        return manager

    @property
    def rec(self):
        return self.manager.store.get(self.session_id)


def sign(key: KeyPair, channel_id: str, amount: int) -> bytes:
    return Voucher.sign(key, channel_id, amount).signature


async def voucher(w: World, kind: str, frac: int) -> None:
    rec = w.rec
    latest, cost = rec.voucher_mist, rec.cost_mist
    deposit = rec.deposit_mist
    amount, key, presented = latest + (max(0, cost - latest) * frac) // 100, w.renter, None
    if kind == "stale":
        if latest == 0:
            return
        amount = latest - 1 - (latest - 1) * frac // 100
    elif kind == "over":
        amount = deposit + 1 + frac
    elif kind == "forged":
        key = KeyPair.generate()
    elif kind == "tampered":
        presented = amount + 1 + frac  # a real signature, for another amount
    signature = sign(key, w.channel_id, amount)
    if key is w.renter:
        w.max_signed = max(w.max_signed, amount)
    try:
        w.manager.record_voucher(w.session_id, w.renter.address,
                                 amount if presented is None else presented, signature)
    except (SessionError, PaymentError):
        assert not (kind == "valid" and rec.settlement == "open"), \
            "a valid voucher was refused"
        assert w.rec.voucher_mist == latest  # a refusal changes nothing
        return
    assert kind == "valid", f"a {kind} voucher was accepted"


async def step(w: World, op: tuple) -> None:
    kind = op[0]
    m = w.manager
    if kind == "advance":
        if w.rec.status == "running":
            w.served_ms += op[1] * 1000
        w.clock.ms += op[1] * 1000
        await m.meter_once()  # stops a session that is behind or used up, settles ended ones
        rec = w.rec
        if rec.status == "running":  # still running: paid up to the grace period
            unpaid = rec.cost_mist - rec.voucher_mist
            assert unpaid <= PRICE * m.settlement.policy.grace_seconds, \
                f"{unpaid} MIST unpaid, beyond the grace period"
    elif kind == "voucher":
        await voucher(w, op[1], op[2])
    elif kind == "topup":
        try:
            await asyncio.to_thread(w.ledger.top_up, w.renter, w.channel_id, op[1])
            w.deposited += op[1]
        except LedgerError:
            return  # closing or closed: refused, nothing moved (checked by the invariants)
        if op[2]:
            try:
                await m.top_up(w.session_id, w.renter.address)
            except (SessionError, PaymentError):
                pass  # the session is over, or its channel closing
    elif kind == "stop":
        await m.stop(w.session_id)
    elif kind == "close_request":
        try:
            await asyncio.to_thread(w.ledger.request_close, w.renter, w.channel_id)
        except LedgerError:
            pass
    elif kind == "finalize":
        allowed_at = w.ledger.get_channel(w.channel_id).close_allowed_at_ms()
        while op[1] and allowed_at is not None and w.clock.ms < allowed_at:
            # the provider's channel watch lags (its ledger node is down) while the renter
            # keeps paying, until the challenge period is over
            await step(w, ("advance", MAX_STEP_S))
            check_invariants(w)
            await step(w, ("voucher", "valid", 100))
            check_invariants(w)
        try:
            await asyncio.to_thread(w.ledger.finalize_close, w.renter, w.channel_id)
        except LedgerError:
            pass  # not requested, or still inside the challenge period
    elif kind == "watch":
        await m.channels_once()
        channel = w.ledger.get_channel(w.channel_id)
        if channel.closed or channel.close_requested_at_ms is not None:
            assert w.rec.status != "running", "a closed or closing channel still pays"
    elif kind == "settle":
        await m.settle_once()
    elif kind == "restart":
        crash, outage_s = op[1], op[2]
        if not crash:
            await m.shutdown()
        m.store.close()
        w.clock.ms += outage_s * 1000  # nobody can reach the session: not served
        await w.open_manager().adopt()


def check_invariants(w: World) -> None:
    channel = w.ledger.get_channel(w.channel_id)
    rec = w.rec
    assert channel.deposited == w.deposited
    assert channel.claimed + channel.refunded + channel.locked == w.deposited
    assert channel.locked >= 0 and (not channel.closed or channel.locked == 0)
    assert w.ledger.balance(w.provider.address) == channel.claimed
    assert w.ledger.balance(w.renter.address) == FUNDS - w.deposited + channel.refunded
    assert channel.claimed <= w.max_signed, "claimed more than the renter signed"
    assert channel.claimed <= rec.cost_mist, "claimed more than the metered cost"
    assert rec.running_ms <= w.served_ms, "metered time the session was not served"
    assert w.served_ms - rec.running_ms <= MAX_STEP_S * 1000  # at most one interval's overrun
    if rec.status == "running":
        assert rec.running_ms == w.served_ms
    elif rec.status in ("stopped", "failed"):
        if w.ended_ms is None:
            w.ended_ms = rec.running_ms
        assert rec.running_ms == w.ended_ms, "metered after the end"
    assert rec.cost_mist <= rec.deposit_mist <= channel.deposited
    if rec.settlement == "lost":  # the signed rest it can no longer claim
        assert rec.lost_mist == rec.voucher_mist - channel.claimed > 0


async def run_sequence(root: Path, deposit: int, ops: list[tuple]) -> None:
    clock = FakeClock()
    with ExitStack() as clocks, LocalLedger(root / "ledger.sqlite", clock=clock.now_ms) as ledger:
        for module in CLOCKED_MODULES:
            clocks.enter_context(mock.patch.object(module, "time", clock))
        renter, provider = KeyPair.generate(), KeyPair.generate()
        ledger.fund(renter.address, FUNDS)
        channel = ledger.open_channel(renter, provider.address, renter.public_key, deposit,
                                      PRICE, 60)
        w = World(root, clock, ledger, StandInRuntime(), renter, provider, channel.channel_id,
                  deposit)
        rec, _ = await w.open_manager().create(renter.address, renter.public_key.hex(),
                                               SessionRequest(image="python", shape="cpu-small",
                                                              channel_id=channel.channel_id))
        w.session_id = rec.id
        await asyncio.gather(*list(w.manager._tasks))  # the stand-in gateway is up
        assert w.rec.status == "running"
        check_invariants(w)
        for op in ops:
            await step(w, op)
            check_invariants(w)
        w.manager.store.close()


PARAMS = {
    "advance": st.tuples(st.just("advance"), st.integers(1, MAX_STEP_S)),
    "pay": st.tuples(st.just("voucher"), st.just("valid"), st.integers(50, 100)),
    "bad voucher": st.tuples(st.just("voucher"),
                             st.sampled_from(["stale", "over", "forged", "tampered"]),
                             st.integers(0, 100)),
    "topup": st.tuples(st.just("topup"), st.integers(1, 200_000), st.booleans()),
    "restart": st.tuples(st.just("restart"), st.booleans(), st.integers(0, 120)),
    "finalize": st.tuples(st.just("finalize"), st.booleans()),  # True: once it is allowed
    **{kind: st.just((kind,)) for kind in ("stop", "close_request", "watch", "settle")},
}
# time and honest payment most often, so that sessions run, get claimed and settle
KINDS = ["advance"] * 6 + ["pay"] * 4 + ["watch"] * 2 + [k for k in PARAMS
                                                          if k not in ("advance", "pay")]
OPS = st.sampled_from(KINDS).flatmap(PARAMS.__getitem__)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(deposit=st.integers(PRICE * 60, PRICE * 600), ops=st.lists(OPS, min_size=5, max_size=60))
# always run: a renter that closes while the provider's watch lags (the claim is lost), and a
# provider crash with a two-minute outage before the renter stops
@example(deposit=PRICE * 300, ops=[("advance", 10), ("voucher", "valid", 100),
                                   ("close_request",), ("finalize", True), ("watch",)])
@example(deposit=PRICE * 300, ops=[("advance", 10), ("voucher", "valid", 100),
                                   ("restart", True, 120), ("advance", 5), ("stop",),
                                   ("voucher", "valid", 100), ("advance", 2)])
def run_property(deposit: int, ops: list[tuple]) -> None:
    SEQUENCES_RUN[0] += 1
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(run_sequence(Path(root), deposit, ops))


def test_money_rules_hold_in_every_interleaving():
    SEQUENCES_RUN[0] = 0
    run_property()
    print(f"money properties: {SEQUENCES_RUN[0]} sequences run")
    assert SEQUENCES_RUN[0] >= EXAMPLES
