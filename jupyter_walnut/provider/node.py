"""A provider node: configuration, identity, runtime, sessions and the HTTP service together."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .._version import __version__
from ..common.keys import KeyPair
from ..common.signed_requests import RequestVerifier
from ..ledger import Ledger
from .analytics import refresh_earnings_metrics
from .config import ProviderConfig
from .hardware import GPU, Hardware, detect
from .image import (
    ImageBuildError,
    built_packages,
    builtin_flavor,
    ensure_gateway_image,
    flavor_description,
    gateway_image_tag,
    image_packages,
    local_packages,
)
from .ledger_setup import node_ledger
from .links import LinkTable
from .metrics import ProviderMetrics
from .package_cache import PackageCache
from .routes import make_app
from .runtimes import Runtime
from .runtimes.docker import DockerRuntime, docker_available
from .runtimes.process import ProcessRuntime
from .runtimes.slurm import SlurmRuntime
from .sessions import SessionManager
from .settlement import ProviderSettlement
from .store import ACTIVE, SessionStore

log = logging.getLogger("walnut.provider")


def choose_runtime(config: ProviderConfig, state_dir: Path, provider_id: str
                   ) -> tuple[Runtime, str]:
    """(runtime, why): Docker when asked for or when `auto` finds an engine, else processes;
    Slurm jobs only when asked for."""
    if config.runtime == "slurm":
        if shutil.which("sbatch") is None:
            raise SystemExit("walnut-provider: runtime is 'slurm' but sbatch is not on PATH")
        return SlurmRuntime(state_dir / "slurm", provider_id, config.slurm,
                            config.availability.max_session_seconds), "configured"
    if config.runtime in ("auto", "docker"):
        ok, reason = docker_available()
        if ok:
            return DockerRuntime(provider_id=provider_id, disk_dir=state_dir / "disks"), \
                "Docker engine found"
        if config.runtime == "docker":
            raise SystemExit(f"walnut-provider: runtime is 'docker' but {reason}")
        why = f"no Docker engine ({reason}); using local processes"
    else:
        why = "configured"
    return ProcessRuntime(state_dir / "sessions"), why


class ProviderNode:
    def __init__(self, config: ProviderConfig, identity: KeyPair, state_dir: Path,
                 runtime: Runtime | None = None, ledger: Ledger | None = None) -> None:
        self.config = config
        self.identity = identity
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.metrics = ProviderMetrics()
        self.verifier = RequestVerifier(config.signature_window_s)
        self.store = SessionStore(self.state_dir / "provider.sqlite")
        self.provider_id = identity.address[:18]
        if runtime is None:
            runtime, why = choose_runtime(config, self.state_dir, self.provider_id)
            log.info("runtime: %s (%s)", runtime.name, why)
        self.runtime = runtime
        self._hw: Hardware | None = None
        self._hw_at = 0.0
        if ledger is None:
            ledger = node_ledger(config, identity)  # [ledger] kind: local or sui
        self.ledger = ledger
        self.settlement = ProviderSettlement(ledger, identity, config.settlement)
        self.sessions = SessionManager(config, runtime, self.store, self.hardware,
                                       self.state_dir, resolve_image=self._resolve_image,
                                       settlement=self.settlement)
        self.sessions.on_event = self._on_session_event
        # the package cache sessions install from; Slurm's sessions run on other machines
        self.package_cache: PackageCache | None = None
        self._cache_start: asyncio.Task | None = None
        if config.packages_cache == "devpi" and runtime.name in ("docker", "process"):
            self.package_cache = PackageCache(
                self.state_dir / "package-cache", runtime=runtime.name, egress=config.egress,
                upstream_url=config.packages_upstream_url, port=config.packages_port)
            self.sessions.package_cache = self.package_cache
        if hasattr(runtime, "on_queued"):  # Slurm: a queued session tells its renter where
            runtime.on_queued = self._on_queued
            runtime.recorded_url = lambda sid: getattr(self.store.get(sid), "gateway_url", None)
        self.started_at = time.time()
        self.server: HTTPServer | None = None
        self._loops: asyncio.Task | None = None
        self._stopped = False
        self.links = LinkTable()  # resumable kernel links by session/kernel/link id, capped
        self.link_grace_s = 120.0  # how long a link waits for its renter to come back
        self._built_packages: dict[str, dict] = {}  # image tag -> its walnut.packages label

    def hardware(self) -> Hardware:
        """Detected hardware, re-read at most every 2 s (NVML calls are not free)."""
        if self._hw is None or time.monotonic() - self._hw_at > 2.0:
            self._hw = detect(str(self.state_dir))
            if self.runtime.name == "slurm":  # the cluster's GPUs, not this host's
                self._hw = replace(self._hw, gpus=tuple(
                    GPU(i, f"slurm-gres-gpu-{i}", "gpu (Slurm GRES)", 0)
                    for i in range(self.runtime.capacity().get("gpus", 0))))
            self._hw_at = time.monotonic()
        return self._hw

    def _resolve_image(self, reference: str) -> str:
        if self.runtime.name != "docker":
            return reference  # processes run this machine's Python environment
        flavor = builtin_flavor(reference)
        if flavor is None:
            return reference
        return ensure_gateway_image(self.runtime.client, flavor=flavor,
                                    progress=lambda step: log.info("gateway image: %s", step))

    def _image_offer(self, image) -> dict:
        """An offered image with its key versions: the `walnut.packages` label of the built
        image where there is one, else what its flavor's pins declare (built on first use)."""
        flavor = builtin_flavor(image.reference)
        packages = None
        if self.runtime.name != "docker":
            packages = local_packages()  # sessions run this machine's Python environment
        else:
            try:
                tag = gateway_image_tag(flavor) if flavor else image.reference
            except ImageBuildError:
                tag = None
            if tag is not None:
                packages = self._built_packages.get(tag)
                if packages is None:
                    packages = built_packages(self.runtime.client, tag)
                    if packages is not None:  # a tag's content never changes
                        self._built_packages[tag] = packages
        if packages is None:
            packages = image_packages(flavor) if flavor else {}
        description = image.description or (flavor_description(flavor) if flavor else "")
        return {"name": image.name, "description": description, "flavor": flavor,
                "packages": packages}

    def _on_queued(self, session_id: str, text: str) -> bool:
        """Show a session waiting in the cluster's queue as its reason; False once it was
        stopped (the runtime then cancels its job)."""
        rec = self.store.get(session_id)
        if rec is None or rec.status != "starting":
            return False
        if rec.reason != text:
            self.store.update(session_id, reason=text)
        return True

    def _on_session_event(self, kind: str, rec) -> None:
        if kind == "started":
            self.metrics.sessions_started.inc()
        elif kind == "failed":
            self.metrics.sessions_failed.inc()
        elif kind == "ending":  # a renter's kernel link asks the session's status, sees why
            for link in self.links.links_of(rec.id):
                link.close(f"the session {rec.status}: {rec.reason}")

    def offer(self) -> dict:
        hw = self.hardware()
        cap = self.sessions.capacity()
        return {
            "version": __version__,
            "node": self.config.name,
            "provider_address": self.identity.address,
            "provider_public_key": self.identity.public_key.hex(),
            "endpoint": self.config.endpoint,
            "tls_fingerprint": getattr(self, "tls_fingerprint", None),
            "region": self.config.region,
            "runtime": self.runtime.name,
            **({"cluster": self.runtime.capacity()} if hasattr(self.runtime, "capacity") else {}),
            "hardware": hw.to_json(),
            "capacity": cap,
            "shapes": [
                {"name": s.name, "gpus": s.gpus, "cpus": s.cpus, "memory_mb": s.memory_mb,
                 "price_mist_per_second": s.price_mist_per_second,
                 "price_mist_per_hour": s.price_mist_per_second * 3600, "disk_mb": s.disk_mb,
                 "gpu_model": hw.gpus[0].model if s.gpus and hw.gpus else None,
                 "gpu_memory_mb": hw.gpus[0].memory_mb if s.gpus and hw.gpus else None,
                 "available": s.name in cap["shapes_available"]}
                for s in self.config.shapes
            ],
            "images": [self._image_offer(i) for i in self.config.images],
            "max_session_seconds": self.config.availability.max_session_seconds,
            "egress": self.config.egress,
            "settlement": {
                "ledger": self.config.ledger,
                "min_prepaid_seconds": self.config.settlement.min_prepaid_seconds,
                "min_challenge_period_s": self.config.settlement.min_challenge_period_s,
                "grace_seconds": self.config.settlement.grace_seconds,
                # whether install time of launch requirements is metered (issue #15)
                "bills_install": self.config.settlement.bills_install,
                # what an ended session leaves its renter, and at what price (issue #16)
                "results": self.config.results.offer(),
            },
            "uptime_seconds": int(time.time() - self.started_at),
        }

    def refresh_metrics(self) -> None:
        counts: dict[str, int] = {}
        metered = 0
        for rec in self.store.list():
            counts[rec.status] = counts.get(rec.status, 0) + 1
            if rec.status in ACTIVE:
                metered += rec.cost_mist
        for status in ("starting", "running", "stopped", "failed"):
            self.metrics.sessions.labels(status).set(counts.get(status, 0))
        self.metrics.metered_mist.set(metered)
        refresh_earnings_metrics(self.metrics, self.store)
        hw = self.hardware()
        self.metrics.cpu_utilization.set(hw.cpu_utilization_pct)
        for gpu in hw.gpus:
            if gpu.utilization_pct is not None:
                self.metrics.gpu_utilization.labels(str(gpu.index)).set(gpu.utilization_pct)
            if gpu.memory_used_mb is not None:
                self.metrics.gpu_memory_used.labels(str(gpu.index)).set(gpu.memory_used_mb)

    async def start(self, host: str | None = None, port: int | None = None,
                    ssl_context=None) -> int:
        """Adopt surviving sessions, start the loops and listen; returns the bound port."""
        if self.package_cache is not None:
            # its port first (adopted sessions' relays need it); devpi takes seconds to
            # start (it derives its key with argon2), sessions starting meanwhile wait for it
            cache_port = await self.package_cache.prepare()
            if cache_port is not None and hasattr(self.runtime, "package_port"):
                self.runtime.package_port = cache_port
                self.runtime.package_target = self.package_cache.socket_path
            self._cache_start = asyncio.ensure_future(self.package_cache.start())
        await self.sessions.adopt()
        self._loops = asyncio.ensure_future(self.sessions.run_loops())
        # bodies up to the hard cap are read and refused with a JSON 413 by the handlers;
        # beyond it tornado drops the connection without reading
        self.tls_fingerprint = getattr(ssl_context, "walnut_fingerprint", None)
        self.server = HTTPServer(make_app(self), xheaders=False, ssl_options=ssl_context,
                                 max_body_size=max(16 << 20, 4 * self.config.max_body_bytes))
        sockets = bind_sockets(
            self.config.listen_port if port is None else port,
            self.config.listen_host if host is None else host)
        self.server.add_sockets(sockets)
        return sockets[0].getsockname()[1]

    async def stop(self, stop_sessions: bool = False) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.server is not None:
            self.server.stop()
        if self._loops is not None:
            self._loops.cancel()
        for link in list(self.links.values()):
            link.close("provider shutting down")
        await self.sessions.shutdown(stop_sessions=stop_sessions)
        await self.runtime.close()
        if self._cache_start is not None:
            self._cache_start.cancel()
            await asyncio.gather(self._cache_start, return_exceptions=True)
        if self.package_cache is not None:
            await self.package_cache.stop()
        self.store.close()
