"""Session lifecycle on the provider, and the one face of sessions the node uses: start,
wait ready, authorize the gateway, stop, watch, adopt after a restart, shut down. Admission
(admission.py), metering (metering.py) and the channel's money (session_settlement.py) are
its collaborators; SessionManager hands their calls on."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..common.protocol import token_auth
from ..common.requirements import Requirements
from .admission import Admission
from .config import ProviderConfig
from .environment_prep import EnvironmentPrep, PreparedEnvironments
from .hardware import Hardware
from .idle import IdleWatch
from .metering import Metering
from .results import ResultSaver, ResultStore
from .runtimes import Runtime, RuntimeError_, RuntimeHandle, SessionSpec
from .session_request import SessionError, SessionRequest, hash_token
from .session_settlement import SessionSettlement
from .settlement import ProviderSettlement
from .store import ACTIVE, SessionRecord, SessionStore

# SessionError, SessionRequest and hash_token are imported from here too
__all__ = ["READY_TIMEOUT_S", "SessionError", "SessionManager", "SessionRequest", "hash_token"]

log = logging.getLogger("walnut.provider")

READY_TIMEOUT_S = 90.0
START_GRACE_S = 120.0  # a start cut short by shutdown: how long to wait for its gateway


class _StoppedWhileStarting(Exception):
    """The session was stopped while its gateway started."""


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
        self.on_event: Callable[[str, SessionRecord], None] = lambda kind, rec: None
        self.metering_interval_s = 1.0
        self.watch_interval_s = 1.0
        self._stopping: set[str] = set()  # sessions whose gateway is being stopped
        self.package_cache = None  # the node's PackageCache (package_cache.py), if it runs one
        self.admission = Admission(config, store, hardware, runtime.name,
                                   self._start_in_background, settlement)
        self.metering = Metering(store, settlement, self)
        self.payments = SessionSettlement(config, store, settlement, self)
        self.environments = EnvironmentPrep(
            runtime, store, PreparedEnvironments(self.state_dir / "environments",
                                                 config.environments_cache_mb * 2**20),
            config.install_timeout_s)
        # launch requirements of admitted sessions, until their start installs them
        self._requirements: dict[str, Requirements] = {}
        # what a session leaves its renter when it ends (issue #16, results.py)
        self.results = ResultStore(self.state_dir / "results")
        self.result_saver = ResultSaver(self.results, config.results)
        self.results_interval_s = 60.0
        # idle auto-stop (issue #17, idle.py): the stop is the one below, results and all
        self.idle = IdleWatch(store, self._handles.get,
                              lambda sid, reason: self.stop(sid, reason=reason),
                              self.is_stopping)

    # --- admission (admission.py) ------------------------------------------------

    def free_gpus(self, hw: Hardware | None = None) -> list[int]:
        return self.admission.free_gpus(hw)

    def capacity(self) -> dict:
        return self.admission.capacity()

    async def create(self, renter: str, renter_public_key: str, req: SessionRequest
                     ) -> tuple[SessionRecord, str]:
        """Admit and start a session; returns the record and the renter's access token."""
        if req.requirements and not self.runtime.can_exec:
            raise SessionError(400, f"requirements: this node's {self.runtime.name} runtime "
                                    "cannot install requirements at launch; launch without "
                                    "them")
        rec, token = await self.admission.create(renter, renter_public_key, req)
        if req.idle_stop_s:  # idle auto-stop (idle.py); no await since admission
            self.store.update(rec.id, extra={**self.store.get(rec.id).extra,
                                             "idle_stop_s": req.idle_stop_s})
            rec = self.store.get(rec.id)
        if req.requirements:
            # read by _start once the gateway is ready: the start task has not run yet (no
            # await since admission scheduled it), and its wait for the gateway awaits
            self._requirements[rec.id] = req.requirements
            self.environments.pending(rec.id, req.requirements)
            rec = self.store.get(rec.id)
        return rec, token

    # --- metering and payment (metering.py, session_settlement.py) -------------------

    async def meter_once(self) -> None:
        await self.metering.meter_once()
        await self.settle_once()

    def record_voucher(self, session_id: str, renter: str, amount: int, signature: bytes
                       ) -> SessionRecord:
        """Keep a renter's newer voucher (persisted before it counts)."""
        return self.payments.record_voucher(session_id, renter, amount, signature)

    async def settle_once(self) -> None:
        await self.payments.settle_once()

    async def channels_once(self) -> None:
        await self.payments.channels_once()

    async def top_up(self, session_id: str, renter: str) -> SessionRecord:
        return await self.payments.top_up(session_id, renter)

    def is_stopping(self, session_id: str) -> bool:
        """Whether the session's gateway is being stopped (its end is not settled yet)."""
        return session_id in self._stopping

    # --- start -------------------------------------------------------------------

    def _start_in_background(self, rec: SessionRecord, image_ref: str) -> None:
        self._spawn(self._start(rec, image_ref))

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
            if self.package_cache is not None:  # PIP_INDEX_URL & co once the cache serves
                await self.package_cache.wait_ready()
                spec = SessionSpec(**{**spec.__dict__, "env": {
                    **spec.env, **self.package_cache.session_env(rec.id)}})
            spec = SessionSpec(**{**spec.__dict__, "image": await asyncio.to_thread(
                self.resolve_image, image_ref)})
            handle = await self._start_gateway(spec)
            self._handles[rec.id] = handle
            if not self._still_starting(rec.id):
                raise _StoppedWhileStarting()
            self.store.update(rec.id, gateway_url=handle.gateway_url, runtime_ref=handle.ref)
            await self._wait_ready(handle, rec.gateway_token)
            requirements = self._requirements.pop(rec.id, None)
            if requirements:
                if self.config.settlement.bills_install:
                    self.metering.begin(rec.id)  # the install is billed (the offer says so)
                await self.environments.prepare(rec, handle, spec.image, requirements)
        except _StoppedWhileStarting:
            await self._drop_stopped_start(rec.id)
            return
        except asyncio.CancelledError:
            # the provider is shutting down mid-start: leave no gateway behind
            if handle is not None:
                await asyncio.shield(self.runtime.stop(handle))
            self._handles.pop(rec.id, None)
            self._requirements.pop(rec.id, None)
            self.metering.forget(rec.id)
            self.environments.interrupted(
                rec.id, "the provider shut down before the install finished")
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
            self._requirements.pop(rec.id, None)
            self.metering.forget(rec.id)  # a failed start is never billed, install or not
            if self.store.get(rec.id).status != "starting":
                return  # stopped while it started (a Slurm job in the queue): that end stands
            self.store.update(rec.id, status="failed", reason=reason, ended_at=time.time())
            log.warning("session %s failed to start: %s", rec.id, reason)
            self.on_event("failed", self.store.get(rec.id))
            return
        if not self._still_starting(rec.id):  # stopped while its gateway came up
            await self._drop_stopped_start(rec.id)
            return
        now = time.time()
        if not self.metering.is_metered(rec.id):
            self.metering.begin(rec.id)
        self.store.update(rec.id, status="running", started_at=now, checkpoint_wall=now)
        log.info("session %s running (%s, shape %s)", rec.id, self.runtime.name, rec.shape)
        self.on_event("started", self.store.get(rec.id))

    async def _start_gateway(self, spec: SessionSpec) -> RuntimeHandle:
        """The runtime's start, finished even when this task is cancelled (the provider
        shutting down): the runtime goes on creating the gateway in its own thread, so the
        caller gets its handle to stop rather than a gateway nobody knows of."""
        start = asyncio.ensure_future(self.runtime.start(spec))
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                handle = await asyncio.wait_for(start, START_GRACE_S)
                await self.runtime.stop(handle)
            raise

    def _still_starting(self, session_id: str) -> bool:
        """False once a stop was recorded while the gateway started (the stop found no
        handle to stop then): its end stands, the session never runs nor is metered again."""
        current = self.store.get(session_id)
        return (current is not None and current.status == "starting"
                and not self.metering.is_unsaved(session_id))

    async def _drop_stopped_start(self, session_id: str) -> None:
        handle = self._handles.pop(session_id, None)
        self._requirements.pop(session_id, None)
        if handle is not None:
            await self.runtime.stop(handle)
        log.info("session %s was stopped while its gateway started: gateway stopped",
                 session_id)

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

    # --- stop, watch ----------------------------------------------------------

    async def stop(self, session_id: str, reason: str = "stopped by renter",
                   status: str = "stopped") -> SessionRecord:
        rec = self.store.get(session_id)
        if rec is None:
            raise SessionError(404, f"no session {session_id!r}")
        if self.metering.is_unsaved(rec.id):
            return self.metering.as_recorded(rec)
        if rec.status not in ACTIVE:
            return rec
        # the last metered interval, then no more; the gateway stops even if the disk is full
        self.metering.record_end(rec.id, status=status, reason=reason, ended_at=time.time())
        # its renters hear of the end now, not from a kernel the runtime kills in a moment
        self.on_event("ending", self.store.get(rec.id))
        handle = self._handles.pop(rec.id, None)
        if handle is not None:
            self._stopping.add(rec.id)  # not settled before the renter hears of the stop
            try:
                if rec.status == "running":  # unmetered, bounded by [results] save_timeout_s
                    await self.result_saver.save(rec)
                await self.runtime.stop(handle)
            finally:
                self._stopping.discard(rec.id)
        elif rec.status == "running":
            self.result_saver.unsaved(rec, "results not saved: the session's gateway was gone")
            # the renter's final voucher answers the stop: wait for it from here on
            self.metering.record_end(rec.id, ended_at=time.time())
        log.info("session %s %s: %s", rec.id, status, reason)
        final = self.metering.as_recorded(self.store.get(rec.id))
        self.on_event(status, final)
        return final

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
                 loop(self.watch_once, self.watch_interval_s),
                 loop(self.expire_results_once, self.results_interval_s),
                 loop(self.idle_once, self.idle.interval_s)]
        if self.settlement is not None:
            loops.append(loop(self.channels_once,
                              self.settlement.policy.channel_check_interval_s))
        await asyncio.gather(*loops)

    async def idle_once(self) -> None:
        """Stop the sessions idle past their threshold (idle.py)."""
        await self.idle.check_once()

    async def expire_results_once(self, now: float | None = None) -> list[str]:
        """Delete the results whose grace period is over; the sessions whose results went."""
        return await asyncio.to_thread(self.results.expire_once, now)

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
                self.metering.begin(rec.id)
                log.info("session %s adopted after restart", rec.id)
            else:
                if handle is not None:
                    await self.runtime.stop(handle)
                self.environments.interrupted(
                    rec.id, "the provider restarted before the install finished")
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
            self.metering.checkpoint(rec.id)
            if stop_sessions:
                await self.stop(rec.id, reason="provider shut down")
