"""Session lifecycle on the provider: admit, start, meter, watch, stop, adopt after restart.

Metering uses this process's monotonic clock while it runs. A provider that was down (a
crash or a restart) charges nothing for the time it was down: an adopted session is metered
again from its adoption, so the renter pays only for time its session was reachable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..common.errors import StatusError
from ..common.models import Settlement
from ..common.numbers import MAX_SECONDS, optional_int
from ..common.protocol import token_auth
from ..common.sqlite_store import StorageError
from ..ledger import Channel, LedgerError
from ..ledger.base import normalize_channel_id
from .config import ProviderConfig, Shape
from .hardware import Hardware
from .runtimes import Runtime, RuntimeError_, RuntimeHandle, SessionSpec
from .settlement import PaymentError, ProviderSettlement
from .store import ACTIVE, ChannelInUse, SessionRecord, SessionStore

log = logging.getLogger("walnut.provider")

READY_TIMEOUT_S = 90.0


class SessionError(StatusError):
    """A request about sessions that cannot be honoured; `status` is the HTTP status."""


@dataclass(frozen=True)
class SessionRequest:
    image: str
    shape: str | None = None
    gpus: int | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    max_seconds: int | None = None
    channel_id: str | None = None

    @classmethod
    def from_json(cls, body: object) -> SessionRequest:
        if not isinstance(body, dict):
            raise SessionError(400, "request body must be a JSON object")
        allowed = {"image", "shape", "gpus", "cpus", "memory_mb", "max_seconds", "channel_id"}
        extra = sorted(set(body) - allowed)
        if extra:
            raise SessionError(400, f"unknown field: {extra[0]}")
        image = body.get("image")
        if not isinstance(image, str) or not image:
            raise SessionError(400, "image: required (a name from the provider's offer)")

        def opt_int(key: str, minimum: int, maximum: int) -> int | None:
            return optional_int(body, key, minimum=minimum, maximum=maximum)  # or a 400

        shape = body.get("shape")
        if shape is not None and not isinstance(shape, str):
            raise SessionError(400, "shape: must be a string")
        channel = body.get("channel_id")
        if channel is not None and not isinstance(channel, str):
            raise SessionError(400, "channel_id: must be a string")
        return cls(image=image, shape=shape, gpus=opt_int("gpus", 0, 1024),
                   cpus=opt_int("cpus", 1, 1024), memory_mb=opt_int("memory_mb", 64, 2**40),
                   max_seconds=opt_int("max_seconds", 1, MAX_SECONDS), channel_id=channel)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionManager:
    def __init__(
        self,
        config: ProviderConfig,
        runtime: Runtime,
        store: SessionStore,
        hardware: Callable[[], Hardware],
        state_dir: Path,
        resolve_image: Callable[[str], str] | None = None,
        settlement: ProviderSettlement | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.store = store
        self.hardware = hardware
        self.state_dir = Path(state_dir)
        self.resolve_image = resolve_image or (lambda ref: ref)
        self.settlement = settlement
        self._handles: dict[str, RuntimeHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._admit_lock = asyncio.Lock()
        self._mono: dict[str, float] = {}  # session id -> monotonic time of last checkpoint
        # ends of sessions the store could not take yet (a full disk): unmetered ms, fields
        self._unsaved: dict[str, tuple[int, dict]] = {}
        self.on_event: Callable[[str, SessionRecord], None] = lambda kind, rec: None
        self.metering_interval_s = 1.0
        self.watch_interval_s = 1.0
        self._settling: dict[str, asyncio.Lock] = {}  # by session id, while it settles
        self._stopping: set[str] = set()  # sessions whose gateway is being stopped

    # --- admission -------------------------------------------------------------

    def _choose_shape(self, req: SessionRequest) -> Shape:
        if req.shape is not None:
            shape = self.config.shape(req.shape)
            if shape is None:
                names = ", ".join(s.name for s in self.config.shapes)
                raise SessionError(400, f"unknown shape {req.shape!r}; this node offers: {names}")
            for key in ("gpus", "cpus", "memory_mb"):
                wanted = getattr(req, key)
                if wanted is not None and wanted > getattr(shape, key):
                    raise SessionError(
                        400, f"{key}={wanted} is more than shape {shape.name!r} gives")
            return shape
        fitting = [
            s for s in self.config.shapes
            if (req.gpus or 0) <= s.gpus and (req.cpus or 0) <= s.cpus
            and (req.memory_mb or 0) <= s.memory_mb
        ]
        if not fitting:
            raise SessionError(400, "no shape on this node gives "
                               f"gpus={req.gpus or 0}, cpus={req.cpus or 0}, "
                               f"memory_mb={req.memory_mb or 0}")
        return min(fitting, key=lambda s: (s.price_mist_per_second, s.gpus, s.cpus))

    def free_gpus(self, hw: Hardware | None = None) -> list[int]:
        hw = hw or self.hardware()
        busy = {g for rec in self.store.list(statuses=ACTIVE) for g in rec.gpus}
        reserved = set(self.config.availability.reserved_gpus)
        return [g.index for g in hw.gpus if g.index not in busy | reserved]

    def capacity(self) -> dict:
        active = self.store.list(statuses=ACTIVE)
        hw = self.hardware()
        free = self.free_gpus(hw)
        avail = self.config.availability
        open_now = avail.open_at(dt.datetime.now())
        slots = max(0, avail.max_sessions - len(active)) if open_now else 0
        return {
            "accepting": open_now and slots > 0,
            "open_now": open_now,
            "active_sessions": len(active),
            "max_sessions": avail.max_sessions,
            "free_session_slots": slots,
            "free_gpus": len(free),
            "shapes_available": [
                s.name for s in self.config.shapes if slots > 0 and s.gpus <= len(free)
            ],
        }

    async def create(self, renter: str, renter_public_key: str, req: SessionRequest
                     ) -> tuple[SessionRecord, str]:
        """Admit and start a session; returns the record and the renter's access token."""
        image = self.config.image(req.image)
        if image is None:
            names = ", ".join(i.name for i in self.config.images)
            raise SessionError(400, f"unknown image {req.image!r}; this node offers: {names}")
        shape = self._choose_shape(req)
        avail = self.config.availability
        max_seconds = req.max_seconds or avail.max_session_seconds
        if max_seconds > avail.max_session_seconds:
            raise SessionError(
                400, f"max_seconds: this node allows at most {avail.max_session_seconds}")
        if self.settlement is None:
            return await self._admit(renter, renter_public_key, image, shape, max_seconds,
                                     None, 0)
        if not req.channel_id:
            raise SessionError(402, "channel_id: an open payment channel is required")
        try:  # one spelling per channel, so that no other spelling pays for a second session
            channel_id = normalize_channel_id(req.channel_id)
        except LedgerError as exc:
            raise SessionError(400, f"channel_id: {exc.message}") from exc
        try:  # taken before any await: a concurrent create of the same channel is refused
            self.store.reserve_channel(channel_id)
        except ChannelInUse as exc:
            raise SessionError(409, "this channel already paid for a session") from exc
        except StorageError:
            await self._refuse_unrecorded(channel_id, renter, renter_public_key, shape)
            raise
        admitted = False
        try:
            deposit = await self.settlement.check_channel(
                channel_id, renter, renter_public_key, shape.price_mist_per_second)
            if shape.price_mist_per_second:
                max_seconds = min(max_seconds, deposit // shape.price_mist_per_second)
            try:
                created = await self._admit(renter, renter_public_key, image, shape,
                                            max_seconds, channel_id, deposit)
            except (SessionError, StorageError):  # a valid channel we cannot use: refund it
                await self._refund_unused(channel_id)
                raise
            admitted = True
            return created
        finally:
            if not admitted:
                self._release(channel_id)

    def _release(self, channel_id: str) -> None:
        try:
            self.store.release_channel(channel_id)
        except StorageError as exc:  # dropped at the next start; until then it stays taken
            log.error("could not release the reservation of channel %s: %s", channel_id,
                      exc.message)

    async def _refuse_unrecorded(self, channel_id: str, renter: str, renter_public_key: str,
                                 shape: Shape) -> None:
        """The store cannot take a reservation (a full disk): refund a valid channel that no
        create holds, since no session can be recorded for it."""
        try:
            if self.store.channel_reserved(channel_id):
                return
            await self.settlement.check_channel(channel_id, renter, renter_public_key,
                                                shape.price_mist_per_second)
        except (StorageError, PaymentError):
            return  # not ours to refund, or we cannot tell
        await self._refund_unused(channel_id)

    async def _refund_unused(self, channel_id: str) -> None:
        """Close a channel no session was admitted on; never one that pays for a session."""
        try:
            if self.store.channel_session(channel_id) is not None:
                log.error("not refunding channel %s: it pays for a session", channel_id)
                return
        except StorageError:
            return  # we cannot tell, so we do not refund
        try:
            await asyncio.to_thread(self.settlement.ledger.provider_close,
                                    self.settlement.identity, channel_id)
        except Exception as exc:  # the renter can still close it after the challenge period
            log.warning("could not close unused channel %s: %s", channel_id, exc)

    async def _admit(self, renter: str, renter_public_key: str, image, shape: Shape,
                     max_seconds: int, channel_id: str | None, deposit: int
                     ) -> tuple[SessionRecord, str]:
        avail = self.config.availability
        async with self._admit_lock:  # capacity checks and the insert are one step
            if not avail.open_at(dt.datetime.now()):
                raise SessionError(409, "this node is not accepting sessions now (schedule)")
            if len(self.store.list(statuses=ACTIVE)) >= avail.max_sessions:
                raise SessionError(409, f"node is at capacity ({avail.max_sessions} sessions)")
            free = self.free_gpus()
            if shape.gpus > len(free):
                raise SessionError(
                    409, f"shape {shape.name!r} needs {shape.gpus} GPU(s); {len(free)} free")
            access_token = secrets.token_urlsafe(32)
            rec = SessionRecord(
                id="s-" + secrets.token_hex(8),
                renter=renter,
                renter_public_key=renter_public_key,
                shape=shape.name,
                image=image.name,
                gpus=free[: shape.gpus],
                cpus=shape.cpus,
                memory_mb=shape.memory_mb,
                price_mist_per_second=shape.price_mist_per_second,
                max_seconds=max_seconds,
                status="starting",
                runtime=self.runtime.name,
                gateway_token=secrets.token_urlsafe(32),
                access_token_hash=hash_token(access_token),
                created_at=time.time(),
                channel_id=channel_id,
                deposit_mist=deposit,
                settlement=Settlement.NONE if self.settlement is None else Settlement.OPEN,
            )
            try:
                self.store.insert(rec)
            except ChannelInUse as exc:  # the reservation is gone: never start unpaid
                raise SessionError(409, "this channel already paid for a session") from exc
            except StorageError:  # nothing started yet; create() refunds the channel
                raise
        self._spawn(self._start(rec, image.reference))
        return rec, access_token

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, rec: SessionRecord, image_ref: str) -> None:
        spec = SessionSpec(
            session_id=rec.id,
            image=image_ref,
            gpus=tuple(rec.gpus),
            cpus=rec.cpus,
            memory_mb=rec.memory_mb,
            gateway_token=rec.gateway_token,
            workspace=self.state_dir / "sessions" / rec.id / "workspace",
            disk_mb=self.config.shape(rec.shape).disk_mb, egress=self.config.egress,
            # what a notebook may read about its own session (no secrets)
            env={"WALNUT_PRICE_MIST_PER_SECOND": str(rec.price_mist_per_second),
                 "WALNUT_SHAPE": rec.shape, "WALNUT_NODE": self.config.name},
        )
        handle = None
        try:
            spec = SessionSpec(**{**spec.__dict__, "image": await asyncio.to_thread(
                self.resolve_image, image_ref)})
            handle = await self.runtime.start(spec)
            self._handles[rec.id] = handle
            self.store.update(rec.id, gateway_url=handle.gateway_url, runtime_ref=handle.ref)
            await self._wait_ready(handle, rec.gateway_token)
        except asyncio.CancelledError:
            # the provider is shutting down mid-start: leave no gateway behind
            if handle is not None:
                await asyncio.shield(self.runtime.stop(handle))
            self._handles.pop(rec.id, None)
            self.store.update(rec.id, status="failed", ended_at=time.time(),
                              reason="the provider shut down while the session was starting")
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, RuntimeError_ | SessionError) else (
                f"gateway failed to start: {exc}")
            if handle is not None:
                logs = await self.runtime.logs(handle, tail=20)
                if logs:
                    log.info("session %s gateway output before failure:\n%s", rec.id, logs)
                await self.runtime.stop(handle)
            self._handles.pop(rec.id, None)
            if self.store.get(rec.id).status != "starting":
                return  # stopped while it started (a Slurm job in the queue): that end stands
            self.store.update(rec.id, status="failed", reason=reason, ended_at=time.time())
            log.warning("session %s failed to start: %s", rec.id, reason)
            self.on_event("failed", self.store.get(rec.id))
            return
        now = time.time()
        self._mono[rec.id] = time.monotonic()
        self.store.update(rec.id, status="running", started_at=now, checkpoint_wall=now)
        log.info("session %s running (%s, shape %s)", rec.id, self.runtime.name, rec.shape)
        self.on_event("started", self.store.get(rec.id))

    async def _wait_ready(self, handle: RuntimeHandle, token: str) -> None:
        client = AsyncHTTPClient()
        deadline = time.monotonic() + READY_TIMEOUT_S
        delay = 0.05
        while True:
            state = await self.runtime.state(handle)
            if not state.running:
                raise RuntimeError_(f"gateway exited during start: {state.reason}")
            try:
                await client.fetch(HTTPRequest(
                    handle.gateway_url + "/api/kernelspecs",
                    headers=token_auth(token), request_timeout=5))
                return
            except (HTTPClientError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError_(f"gateway not ready after {READY_TIMEOUT_S:.0f}s")
            await asyncio.sleep(delay)  # polling an external process; bounded by the deadline
            delay = min(delay * 1.2, 0.1)

    # --- access ----------------------------------------------------------------

    def owned(self, session_id: str, renter: str) -> SessionRecord:
        rec = self.store.get(session_id)
        # another renter's session looks exactly like a missing one
        if rec is None or not hmac.compare_digest(rec.renter, renter):
            raise SessionError(404, f"no session {session_id!r}")
        return rec

    def authorize_gateway(self, session_id: str, access_token: str) -> RuntimeHandle:
        """The gateway of a running session, if `access_token` is that session's token."""
        rec = self.store.get(session_id)
        if rec is None or not hmac.compare_digest(rec.access_token_hash,
                                                  hash_token(access_token)):
            raise SessionError(403, "invalid session token")
        if rec.status != "running":
            raise SessionError(409, f"session is {rec.status}")
        handle = self._handles.get(session_id)
        if handle is None:
            raise SessionError(503, "session gateway is not reachable")
        return handle

    # --- stop, meter, watch ----------------------------------------------------

    async def stop(self, session_id: str, reason: str = "stopped by renter",
                   status: str = "stopped") -> SessionRecord:
        rec = self.store.get(session_id)
        if rec is None:
            raise SessionError(404, f"no session {session_id!r}")
        if rec.id in self._unsaved:
            return self._as_recorded(rec)
        if rec.status not in ACTIVE:
            return rec
        # the last metered interval, then no more; the gateway stops even if the disk is full
        self._record_end(rec.id, status=status, reason=reason, ended_at=time.time())
        handle = self._handles.pop(rec.id, None)
        if handle is not None:
            self._stopping.add(rec.id)  # not settled before the renter hears of the stop
            try:
                await self.runtime.stop(handle)
            finally:
                self._stopping.discard(rec.id)
            # the renter's final voucher answers the stop: wait for it from here on
            self._record_end(rec.id, ended_at=time.time())
        log.info("session %s %s: %s", rec.id, status, reason)
        final = self._as_recorded(self.store.get(rec.id))
        self.on_event(status, final)
        return final

    def _record_end(self, session_id: str, **fields) -> None:
        unmetered = self._unmetered_ms(session_id, time.monotonic())
        self._mono.pop(session_id, None)
        pending_ms, pending = self._unsaved.get(session_id, (0, {}))
        self._unsaved[session_id] = (pending_ms + unmetered, {**pending, **fields})
        self._write_end(session_id)

    def _write_end(self, session_id: str) -> None:
        """Write a session's end kept in memory; kept there while the store cannot take it."""
        unmetered, fields = self._unsaved[session_id]
        try:
            if unmetered:
                self.store.add_running_time(session_id, unmetered, time.time())
                self._unsaved[session_id] = (0, fields)
            self.store.update(session_id, **fields)
        except StorageError as exc:
            log.error("session %s ended but is not recorded yet: %s", session_id, exc.message)
            return
        del self._unsaved[session_id]

    def _as_recorded(self, rec: SessionRecord) -> SessionRecord:
        """The record as it will be written once the disk allows."""
        unmetered, fields = self._unsaved.get(rec.id, (0, {}))
        return replace(rec, running_ms=rec.running_ms + unmetered, **fields)

    def _unmetered_ms(self, session_id: str, now: float) -> int:
        """Running time since the last checkpoint written to the store (0 if not metered)."""
        last = self._mono.get(session_id)
        return 0 if last is None else int((now - last) * 1000)

    def _checkpoint(self, session_id: str) -> None:
        if session_id not in self._mono:
            return
        mono = time.monotonic()
        self.store.add_running_time(session_id, self._unmetered_ms(session_id, mono), time.time())
        self._mono[session_id] = mono

    async def meter_once(self) -> None:
        for session_id in list(self._unsaved):
            self._write_end(session_id)
        for rec in self.store.list(statuses=("running",)):
            if rec.id in self._unsaved:
                continue
            try:
                self._checkpoint(rec.id)
                rec = self.store.get(rec.id)
            except StorageError as exc:
                log.error("metering session %s: %s", rec.id, exc.message)
                # judged on the time it really ran: the checkpoint stays where it was
                rec = replace(rec, running_ms=rec.running_ms
                              + self._unmetered_ms(rec.id, time.monotonic()))
            if rec.running_ms >= rec.max_seconds * 1000:
                await self.stop(rec.id, reason=self._limit_reason(rec), status="stopped")
            elif self.settlement is not None and (why := self.settlement.behind(rec)):
                await self.stop(rec.id, reason=why, status="stopped")
        await self.settle_once()

    def _limit_reason(self, rec: SessionRecord) -> str:
        """Why a session that reached max_seconds stops: its deposit buys no more second,
        or the duration it asked for (or the node allows) is over."""
        if self.settlement is not None and rec.price_mist_per_second \
                and rec.deposit_mist - rec.cost_mist < rec.price_mist_per_second:
            return "the deposit is used up"
        return "maximum duration reached"

    # --- payment -------------------------------------------------------------------------

    def record_voucher(self, session_id: str, renter: str, amount: int, signature: bytes
                       ) -> SessionRecord:
        """Keep a renter's newer voucher (persisted before it counts)."""
        if self.settlement is None:
            raise SessionError(409, "this node does not take payments")
        rec = self.owned(session_id, renter)
        self.settlement.check_voucher(rec, amount, signature)  # or PaymentError
        # one statement, and only over a smaller voucher of a channel still open
        if not self.store.update_money(session_id, monotonic="voucher_mist",
                                       expect={"settlement": Settlement.OPEN},
                                       voucher_mist=amount, voucher_signature=signature.hex()):
            raise SessionError(409, "a larger voucher or the settlement came first")
        return self.store.get(session_id)

    async def settle_once(self) -> None:
        """Settle ended sessions: once the final voucher covers the cost, or after a wait."""
        if self.settlement is None:
            return
        await asyncio.sleep(0)  # a caller polling this in a loop lets pending stops finish
        for rec in self.store.list(statuses=("stopped", "failed")):
            if rec.settlement is not Settlement.OPEN or rec.channel_id is None or \
                    rec.id in self._stopping:
                continue
            waited = time.time() - (rec.ended_at or 0)
            if rec.voucher_mist < rec.cost_mist and \
                    waited < self.settlement.policy.settle_after_s:
                continue
            await self._settle(rec.id)

    async def _settle(self, session_id: str) -> None:
        """Claim and close one ended session's channel; a ledger that fails is tried again on
        the next pass, a channel closed before the claim is recorded as a final loss."""
        # one settlement of a session at a time; a second caller waits for the first
        async with self._settling.setdefault(session_id, asyncio.Lock()):
            rec = self.store.get(session_id)
            if rec.settlement is not Settlement.OPEN:
                return
            try:
                facts = await self.settlement.settle(rec)
            except Exception as exc:  # the ledger is unreachable: try again next pass
                log.warning("settling session %s failed (tried again): %s", rec.id, exc)
                return
            self._record_settlement(rec.id, facts)
        self._settling.pop(session_id, None)

    def _record_settlement(self, session_id: str, facts: dict) -> None:
        self.store.update_money(session_id, **facts)  # only these columns: vouchers stay
        final = self.store.get(session_id)
        self.on_event("settlement_lost" if final.settlement is Settlement.LOST else "settled",
                      final)

    # --- the renter's channel on the ledger ----------------------------------------------

    async def channels_once(self) -> None:
        """Follow every running session's channel: a top-up extends the session, a close
        request is claimed at once and stops it, a closed channel stops it and is recorded
        as lost; long sessions are claimed every `claim_interval_s`."""
        if self.settlement is None:
            return
        for rec in self.store.list(statuses=("running",)):
            if rec.channel_id is None or rec.id in self._unsaved:
                continue
            try:
                channel = await self.settlement.read_channel(rec.channel_id)
            except PaymentError as exc:
                log.warning("session %s: cannot read channel %s: %s", rec.id, rec.channel_id,
                            exc.message)
                continue
            await self._follow_channel(rec.id, channel)

    async def _follow_channel(self, session_id: str, channel: Channel) -> None:
        rec = self.store.get(session_id)
        if rec is None or rec.status != "running":
            return
        if channel.closed:
            await self.stop(rec.id, status="stopped", reason=(
                "the payment channel was closed on the ledger: this session is no longer paid"))
            await self._settle(rec.id)
        elif channel.close_requested_at_ms is not None:
            await self._claim(rec.id)  # inside the challenge period: what is signed is ours
            await self.stop(rec.id, status="stopped", reason=(
                "the renter asked the ledger to close the payment channel"))
        else:
            self._extend(rec, channel)
            if time.time() - (rec.claimed_at or rec.started_at or 0) >= \
                    self.settlement.policy.claim_interval_s:
                await self._claim(rec.id)

    async def _claim(self, session_id: str) -> None:
        """Claim a running session's newest voucher now; a closed channel stops it."""
        rec = self.store.get(session_id)
        try:
            paid = await self.settlement.claim_newest(rec)
        except LedgerError as exc:
            if exc.code != "E_CHANNEL_CLOSED":
                log.warning("session %s: claim failed (tried again): %s", session_id, exc)
                return
            try:
                channel = await self.settlement.read_channel(rec.channel_id)
            except PaymentError as err:
                log.warning("session %s: %s", session_id, err.message)
                return
            await self._follow_channel(session_id, channel)
            return
        changes: dict = {"claimed_at": time.time()}
        if paid:
            changes["claimed_mist"] = rec.voucher_mist
            log.info("session %s: claimed %d MIST while running", session_id, paid)
        self.store.update_money(session_id, **changes)

    def _extend(self, rec: SessionRecord, channel: Channel) -> SessionRecord:
        """A deposit the ledger shows larger than the session's (a top-up) buys more time,
        up to the node's maximum duration."""
        if channel.deposited <= rec.deposit_mist:
            return rec
        max_seconds = rec.max_seconds
        if rec.price_mist_per_second:
            bought = min(self.config.availability.max_session_seconds,
                         channel.deposited // rec.price_mist_per_second)
            max_seconds = max(max_seconds, bought)
        self.store.update(rec.id, max_seconds=max_seconds)
        self.store.update_money(rec.id, monotonic="deposit_mist", deposit_mist=channel.deposited)
        log.info("session %s: deposit now %d MIST, up to %ds", rec.id, channel.deposited,
                 max_seconds)
        return self.store.get(rec.id)

    async def top_up(self, session_id: str, renter: str) -> SessionRecord:
        """The renter says it topped up its channel: the ledger, not the renter, says by
        how much."""
        if self.settlement is None:
            raise SessionError(409, "this node does not take payments")
        rec = self.owned(session_id, renter)
        if rec.status not in ACTIVE:
            raise SessionError(409, f"session is {rec.status}")
        channel = await self.settlement.read_channel(rec.channel_id)  # or PaymentError
        if channel.closed or channel.close_requested_at_ms is not None:
            await self._follow_channel(rec.id, channel)
            raise SessionError(409, f"the channel is {channel.status}: the session stops")
        rec = self.owned(session_id, renter)  # fresh after the await
        return self._extend(rec, channel)

    async def usage(self, rec: SessionRecord) -> dict:
        """Live figures for a running session: its CPU and memory, and its GPUs' (NVML)."""
        handle = self._handles.get(rec.id)
        if handle is None or rec.status != "running":
            return {}
        figures = dict(await self.runtime.usage(handle))
        gpus = [g for g in self.hardware().gpus if g.index in rec.gpus]
        if gpus:
            utils = [g.utilization_pct for g in gpus if g.utilization_pct is not None]
            figures["gpu_utilization_pct"] = round(sum(utils) / len(utils), 1) if utils else None
            figures["gpu_memory_used_mb"] = sum(g.memory_used_mb or 0 for g in gpus)
            figures["gpu_memory_mb"] = sum(g.memory_mb for g in gpus)
        return figures

    async def watch_once(self) -> None:
        for rec in self.store.list(statuses=("running",)):
            handle = self._handles.get(rec.id)
            if handle is None:
                continue
            state = await self.runtime.state(handle)
            if not state.running:
                logs = await self.runtime.logs(handle, tail=20)
                if logs:
                    log.info("session %s gateway output:\n%s", rec.id, logs)
                await self.stop(rec.id, reason=f"gateway died: {state.reason}", status="failed")

    async def run_loops(self) -> None:
        async def loop(fn, interval):
            while True:
                try:
                    await fn()
                except Exception:  # a loop must outlive one bad pass
                    log.exception("provider loop %s failed", fn.__name__)
                await asyncio.sleep(interval)

        loops = [loop(self.meter_once, self.metering_interval_s),
                 loop(self.watch_once, self.watch_interval_s)]
        if self.settlement is not None:
            loops.append(loop(self.channels_once,
                              self.settlement.policy.channel_check_interval_s))
        await asyncio.gather(*loops)

    async def adopt(self) -> None:
        """After a restart: re-attach gateways still running, fail sessions that are gone."""
        running = {h.session_id: h for h in await self.runtime.adopt()}
        for rec in self.store.list(statuses=ACTIVE):
            handle = running.pop(rec.id, None)
            if handle is not None and rec.status == "running":
                self._handles[rec.id] = handle
                # no charge for the outage: the renter could neither reach the session nor
                # pay while we were down (and would be stopped as behind); metering resumes now
                self.store.add_running_time(rec.id, 0, time.time())
                self._mono[rec.id] = time.monotonic()
                log.info("session %s adopted after restart", rec.id)
            else:
                if handle is not None:
                    await self.runtime.stop(handle)
                self.store.update(rec.id, status="failed", ended_at=time.time(),
                                  reason="session was lost while the provider was down")
        for handle in running.values():  # gateways this node has no record of
            log.warning("stopping unknown session gateway %s", handle.session_id)
            await self.runtime.stop(handle)

    async def shutdown(self, stop_sessions: bool = False) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # their cleanup runs first
        for rec in self.store.list(statuses=("running",)):
            self._checkpoint(rec.id)
            if stop_sessions:
                await self.stop(rec.id, reason="provider shut down")
