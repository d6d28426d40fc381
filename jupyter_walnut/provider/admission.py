"""Session admission on the provider: the shape a request gets, the node's capacity and free
GPUs, and the renter's payment channel (checked, reserved for one session, refunded when no
session can be recorded for it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable

from ..common.models import Settlement
from ..common.sqlite_store import StorageError
from ..ledger import LedgerError
from ..ledger.base import normalize_channel_id
from .config import ProviderConfig, Shape
from .hardware import Hardware
from .session_request import SessionError, SessionRequest, hash_token
from .settlement import PaymentError, ProviderSettlement
from .store import ACTIVE, ChannelInUse, SessionRecord, SessionStore

log = logging.getLogger("walnut.provider")


class Admission:
    """Decides whether a session may start and records it; `start` then starts its gateway."""

    def __init__(
        self,
        config: ProviderConfig,
        store: SessionStore,
        hardware: Callable[[], Hardware],
        runtime_name: str,
        start: Callable[[SessionRecord, str], None],
        settlement: ProviderSettlement | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.hardware = hardware
        self.runtime_name = runtime_name
        self.start = start  # (record, image reference): starts the admitted session
        self.settlement = settlement
        self._admit_lock = asyncio.Lock()

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
                runtime=self.runtime_name,
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
        self.start(rec, image.reference)  # in the background: the renter hears at once
        return rec, access_token
