"""Session gateways as hardened Docker containers: the runtime for strangers' code.

Each session gets its own bridge network (`walnut-<session>`, Linux bridge `wn<hash>`) with
the provider's egress policy on it (egress.py), its own named volume for the workspace
(/home/walnut/work) on a loop-mounted ext4 image of the shape's disk allowance (disk.py), a
/tmp tmpfs of at most that size, and one container running the gateway image as uid 1000 with
every capability dropped, no-new-privileges, a read-only root fs, CPU/memory/pids limits and
only the GPUs assigned to it (a CPU session sees none: NVIDIA_VISIBLE_DEVICES=void). The
gateway port is published on 127.0.0.1 only: the provider's proxy is the one way in. Labels
(`walnut.managed`, `walnut.provider`, `walnut.session`) let a restarted provider find and
adopt its running sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests
from docker.types import DeviceRequest, IPAMConfig, IPAMPool, LogConfig

from . import egress
from .base import (
    GATEWAY_CONTAINER_PORT,
    LineSplitter,
    Runtime,
    RuntimeError_,
    RuntimeHandle,
    RuntimeState,
    SessionSpec,
)
from .disk import WorkspaceDisks
from .relay import PACKAGE_HOST, TcpRelay

log = logging.getLogger("walnut.provider")

WORKSPACE = "/home/walnut/work"
SESSION_ENV = WORKSPACE + "/.walnut/env"  # the session's writable venv (walnut_gateway/env.py)
SESSION_USER = "1000:1000"
PORT_KEY = f"{GATEWAY_CONTAINER_PORT}/tcp"
LABEL_MANAGED = "walnut.managed"
LABEL_PROVIDER = "walnut.provider"
LABEL_SESSION = "walnut.session"
BUILD_HINT = "build it with `python -m jupyter_walnut.provider.image`"

T = TypeVar("T")


def docker_available() -> tuple[bool, str]:
    """Whether a Docker engine answers here; the reason in words when not."""
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # DockerException, requests' ConnectionError, ...
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return False, f"no Docker engine answers ({detail[:200]})"
    return True, ""


def resource_name(session_id: str) -> str:
    """The container, network and volume name of a session."""
    return "walnut-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", session_id)


def _describe(exc: Exception, image: str | None = None) -> RuntimeError_:
    """A Docker SDK error as a message a renter or operator can act on."""
    if isinstance(exc, RuntimeError_):
        return exc
    if isinstance(exc, docker.errors.ImageNotFound) and image:
        return RuntimeError_(f"the session image {image} is not on this provider; {BUILD_HINT}")
    if isinstance(exc, docker.errors.APIError):
        text = str(exc.explanation or exc)
        if "capabilities: [[gpu]]" in text or "nvidia" in text.lower():
            return RuntimeError_(
                "GPUs were requested but the Docker engine cannot give them "
                f"(is nvidia-container-toolkit installed?): {text}"
            )
        return RuntimeError_(f"Docker refused: {text}")
    if isinstance(exc, docker.errors.DockerException) or _is_connection_error(exc):
        return RuntimeError_(f"the Docker engine is not reachable: {exc}")
    return RuntimeError_(f"Docker error: {exc}")


def _is_connection_error(exc: Exception) -> bool:
    return isinstance(exc, requests.exceptions.ConnectionError | ConnectionError)


def gpu_env(gpus: tuple[int, ...]) -> dict[str, str]:
    """What the NVIDIA container runtime and CUDA read: exactly the session's GPUs, or none
    (an image's own NVIDIA_VISIBLE_DEVICES=all must not hand a CPU session every GPU)."""
    if gpus:
        return {"NVIDIA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)}
    return {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}


def _host_port(attrs: dict[str, Any]) -> int | None:
    bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(PORT_KEY) or []
    for binding in bindings:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


USAGE_PERIOD_S = 5.0  # how often each watched container's statistics are read
USAGE_FORGET_S = 60.0  # a container no one asked about for this long is no longer read


class _UsageSample:
    """A container's last statistics: CPU percent from the change since the sample before."""

    def __init__(self) -> None:
        self.asked = 0.0
        self.figures: dict = {}
        self.cpu: tuple[int, int] | None = None  # (container, system) CPU ns at the last read

    def update(self, stats: dict) -> None:
        cpu = stats.get("cpu_stats") or {}
        now = (cpu.get("cpu_usage", {}).get("total_usage", 0), cpu.get("system_cpu_usage", 0))
        pre = stats.get("precpu_stats") or {}
        before = self.cpu or (pre.get("cpu_usage", {}).get("total_usage", 0),
                              pre.get("system_cpu_usage", 0))
        delta, system = now[0] - before[0], now[1] - before[1]
        cores = cpu.get("online_cpus") or 1
        pct = 100.0 * delta / system * cores if system > 0 and delta >= 0 else 0.0
        memory = (stats.get("memory_stats") or {}).get("usage", 0)
        self.cpu = now
        self.figures = {"cpu_pct": round(pct, 1), "memory_used_mb": int(memory // 2**20)}


# The engine's default address pools hold about 31 networks, one per session here: past
# them a session network gets a free /28 of this range (issue #18: 64 sessions on a node).
SPARE_SUBNETS = ipaddress.ip_network("10.213.0.0/16")
_NO_POOL = "could not find an available, non-overlapping IPv4 address pool"
_subnet_lock = threading.Lock()  # one choice of a spare subnet at a time in this process


def _subnets_in_use(client) -> list[ipaddress.IPv4Network]:
    used = []
    for net in client.api.networks():
        for row in ((net.get("IPAM") or {}).get("Config") or []):
            if row.get("Subnet") and ":" not in row["Subnet"]:
                used.append(ipaddress.ip_network(row["Subnet"], strict=False))
    return [u for u in used if u.overlaps(SPARE_SUBNETS)]


def _network_gateway(attrs: dict[str, Any]) -> str | None:
    """The host's address on a session network (its bridge's gateway): the one the engine
    recorded, else the subnet's first address, which the engine gives the bridge when a
    network names only its subnet (a spare /28)."""
    for row in ((attrs.get("IPAM") or {}).get("Config") or []):
        if row.get("Gateway") and ":" not in row["Gateway"]:
            return row["Gateway"].split("/")[0]
        with contextlib.suppress(ValueError, StopIteration):
            subnet = ipaddress.ip_network(row.get("Subnet") or "", strict=False)
            if subnet.version == 4:
                return str(next(subnet.hosts()))
    return None


class DockerRuntime(Runtime):
    name = "docker"
    can_exec = True

    def __init__(self, client=None, provider_id: str = "local", *,
                 shm_size: str = "256m", tmp_mb: int = 512, disk_dir: Path | None = None
                 ) -> None:
        """`client`: a docker.DockerClient, or None to connect with `docker.from_env()` on
        first use. `provider_id` tags every container so that only this provider adopts it.
        `disk_dir` holds the sessions' workspace images (default: under the temp directory)."""
        self._client = client
        self._own_client = client is None
        self.provider_id = provider_id
        self.shm_size = shm_size
        self.tmp_mb = tmp_mb
        # the node's package cache on loopback (package_cache.py): each session reaches it
        # through a relay on its own bridge's gateway address, by the name PACKAGE_HOST
        self.package_port: int | None = None
        self.package_target = ""  # the cache's Unix socket, each relay's other end
        self._gateways: dict[str, str] = {}  # session -> its bridge's gateway address
        self._relays: dict[str, TcpRelay] = {}
        self._usage: dict[str, _UsageSample] = {}  # by container: the last sample
        self._sampler: asyncio.Task | None = None
        self.disks = WorkspaceDisks(disk_dir or Path(tempfile.gettempdir()) /
                                    f"walnut-disks-{re.sub(r'[^a-zA-Z0-9_.-]', '-', provider_id)}")

    # --- plumbing -------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = docker.from_env()
            except Exception as exc:
                raise _describe(exc) from exc
        return self._client

    async def _call(self, fn: Callable[..., T], *args: Any, image: str | None = None) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            raise _describe(exc, image) from exc

    def _labels(self, session_id: str) -> dict[str, str]:
        return {LABEL_MANAGED: "1", LABEL_PROVIDER: self.provider_id, LABEL_SESSION: session_id}

    def _handle(self, container) -> RuntimeHandle | None:
        port = _host_port(container.attrs)
        session_id = (container.labels or {}).get(LABEL_SESSION)
        if port is None or not session_id:
            return None
        return RuntimeHandle(session_id, f"http://127.0.0.1:{port}", container.id)

    # --- Runtime --------------------------------------------------------------------------

    def _container_kwargs(self, spec: SessionSpec, name: str) -> dict[str, Any]:
        env = spec.gateway_env(
            "0.0.0.0", GATEWAY_CONTAINER_PORT, home=WORKSPACE,
            runtime_dir="/tmp/jupyter-runtime",  # the root fs is read-only
            WALNUT_SESSION_CGROUP="1",  # the container's cgroup is the session's own
            # enforced here (egress.py): pip in the session says why it cannot download
            WALNUT_EGRESS=spec.env.get("WALNUT_EGRESS", spec.egress),
            **gpu_env(spec.gpus))
        kwargs: dict[str, Any] = dict(
            image=spec.image,
            name=name,
            hostname="walnut",
            detach=True,
            labels=self._labels(spec.session_id),
            environment=env,
            user=SESSION_USER,
            working_dir=WORKSPACE,
            network=name,
            ports={PORT_KEY: ("127.0.0.1", None)},  # loopback only, a free host port
            volumes={name: {"bind": WORKSPACE, "mode": "rw"}},
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={min(self.tmp_mb, spec.disk_mb)}m,mode=1777"},
            shm_size=self.shm_size,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
            pids_limit=spec.pids_limit,
            mem_limit=f"{spec.memory_mb}m",
            memswap_limit=f"{spec.memory_mb}m",  # no swap beyond the memory limit
            init=True,  # reaps the kernels' orphans
            log_config=LogConfig(type="json-file", config={"max-size": "10m", "max-file": "2"}),
        )
        if spec.cpus > 0:
            kwargs["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.session_id in self._gateways:
            kwargs["extra_hosts"] = {PACKAGE_HOST: self._gateways[spec.session_id]}
        if spec.gpus:
            kwargs["device_requests"] = [
                DeviceRequest(device_ids=[str(g) for g in spec.gpus], capabilities=[["gpu"]])
            ]
        return kwargs

    def _create_network(self, name: str, **kwargs: Any):
        """The session's bridge network: from the engine's address pools, or once they are
        used up, on a spare subnet no other network holds."""
        client = self.client
        try:
            return client.networks.create(name, **kwargs)
        except docker.errors.APIError as exc:
            if _NO_POOL not in str(exc.explanation or exc):
                raise
        with _subnet_lock:
            used = _subnets_in_use(client)
            for subnet in SPARE_SUBNETS.subnets(new_prefix=28):
                if any(subnet.overlaps(u) for u in used):
                    continue
                ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet))])
                try:
                    return client.networks.create(name, ipam=ipam, **kwargs)
                except docker.errors.APIError as exc:  # taken meanwhile by another process
                    if "overlap" not in str(exc.explanation or exc).lower():
                        raise
        raise RuntimeError_(f"no free subnet for the session network in {SPARE_SUBNETS}")

    def _start(self, spec: SessionSpec) -> RuntimeHandle:
        client = self.client
        client.images.get(spec.image)  # ImageNotFound here, never an attempt to pull
        name = resource_name(spec.session_id)
        labels = self._labels(spec.session_id)
        try:
            network = self._create_network(
                name, driver="bridge", labels=labels, check_duplicate=True,
                options={"com.docker.network.bridge.name": egress.bridge_name(spec.session_id)})
            services: tuple[tuple[str, int], ...] = ()
            if self.package_port:
                network.reload()
                gateway = _network_gateway(network.attrs)
                if gateway:
                    self._gateways[spec.session_id] = gateway
                    services = ((gateway, self.package_port),)
            # before anything runs behind it
            egress.install(spec.session_id, spec.egress, services)
            device = self.disks.create(name, spec.disk_mb)
            client.volumes.create(name, labels=labels, driver="local", driver_opts={
                "type": "ext4", "device": device, "o": "nosuid,nodev,discard"})
            container = client.containers.create(**self._container_kwargs(spec, name))
            container.start()
            container.reload()
            port = _host_port(container.attrs)
            if port is None:
                state = container.attrs.get("State") or {}
                tail = container.logs(tail=20).decode(errors="replace").strip()
                raise RuntimeError_(
                    f"the gateway container stopped at once (exit code "
                    f"{state.get('ExitCode')}): {tail or state.get('Error') or 'no output'}"
                )
            return RuntimeHandle(spec.session_id, f"http://127.0.0.1:{port}", container.id)
        except BaseException:
            with contextlib.suppress(Exception):  # keep the first error
                self._remove(spec.session_id, name)
            raise

    async def start(self, spec: SessionSpec) -> RuntimeHandle:
        try:
            handle = await self._call(self._start, spec, image=spec.image)
        except BaseException:
            self._gateways.pop(spec.session_id, None)
            raise
        await self._open_relay(spec.session_id)
        return handle

    async def _open_relay(self, session_id: str) -> None:
        """The session's way to the package cache (none when the node runs no cache)."""
        gateway = self._gateways.get(session_id)
        if not self.package_port or gateway is None or session_id in self._relays:
            return
        relay = TcpRelay(self.package_target)
        try:
            await relay.start(gateway, self.package_port)
        except OSError as exc:  # the session runs, without the node's package index
            log.warning("session %s: no package cache relay on %s:%s (%s)", session_id,
                        gateway, self.package_port, exc)
            return
        self._relays[session_id] = relay

    async def _close_relay(self, session_id: str) -> None:
        self._gateways.pop(session_id, None)
        relay = self._relays.pop(session_id, None)
        if relay is not None:
            await relay.close()

    def _remove(self, session_id: str, ref: str) -> None:
        client = self.client
        name = resource_name(session_id)
        containers = []
        for key in {ref, name}:
            try:
                containers.append(client.containers.get(key))
            except docker.errors.NotFound:
                pass
        containers += client.containers.list(
            all=True, filters={"label": [f"{LABEL_SESSION}={session_id}",
                                         f"{LABEL_PROVIDER}={self.provider_id}"]})
        seen: set[str] = set()
        for container in containers:
            if container.id in seen:
                continue
            seen.add(container.id)
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        for network in client.networks.list(filters={"label": f"{LABEL_SESSION}={session_id}"}):
            if network.name == name:
                try:
                    network.remove()
                except docker.errors.NotFound:
                    pass
        try:
            client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        self.disks.remove(name)
        egress.remove(session_id)

    async def stop(self, handle: RuntimeHandle) -> None:
        await self._close_relay(handle.session_id)
        await self._call(self._remove, handle.session_id, handle.ref)

    def _state(self, handle: RuntimeHandle) -> RuntimeState:
        try:
            container = self.client.containers.get(handle.ref)
        except docker.errors.NotFound:
            return RuntimeState(False, "the session container is gone")
        state = container.attrs.get("State") or {}
        if state.get("Running") and not state.get("Restarting"):
            return RuntimeState(True)
        parts = [f"the session container is {state.get('Status', 'not running')}"]
        if state.get("ExitCode") is not None and state.get("Status") == "exited":
            parts[0] += f" with exit code {state['ExitCode']}"
        if state.get("OOMKilled"):
            limit = (container.attrs.get("HostConfig") or {}).get("Memory") or 0
            parts.append(f"killed for running out of memory (limit {limit // 2**20} MiB)")
        if state.get("Error"):
            parts.append(state["Error"])
        tail = container.logs(tail=5).decode(errors="replace").strip()
        if tail:
            parts.append("last output: " + " | ".join(tail.splitlines()))
        return RuntimeState(False, "; ".join(parts))

    async def state(self, handle: RuntimeHandle) -> RuntimeState:
        return await self._call(self._state, handle)

    def _adopt(self) -> list[RuntimeHandle]:
        containers = self.client.containers.list(filters={
            "label": [f"{LABEL_MANAGED}=1", f"{LABEL_PROVIDER}={self.provider_id}"],
            "status": "running",
        })
        handles = [self._handle(c) for c in containers]
        for container, handle in zip(containers, handles, strict=True):
            networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
            gateway = (networks.get(resource_name(handle.session_id)) or {}).get("Gateway") \
                if handle is not None else None
            if gateway:  # its relay to the package cache reopens with it
                self._gateways[handle.session_id] = gateway
        return sorted((h for h in handles if h is not None), key=lambda h: h.session_id)

    async def adopt(self) -> list[RuntimeHandle]:
        handles = await self._call(self._adopt)
        for handle in handles:
            await self._open_relay(handle.session_id)
        return handles

    def _logs(self, handle: RuntimeHandle, tail: int) -> str:
        try:
            container = self.client.containers.get(handle.ref)
        except docker.errors.NotFound:
            return ""
        return container.logs(tail=tail).decode(errors="replace")

    async def usage(self, handle: RuntimeHandle) -> dict:
        """The container's last sampled CPU and memory ({} until the first sample). The
        engine takes ~2 s to answer a statistics read, so it is never made on a caller's
        request (a renter reads this on every payment pass, issue #18): a background task
        samples the containers asked about recently, one at a time."""
        sample = self._usage.setdefault(handle.ref, _UsageSample())
        sample.asked = time.monotonic()
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.ensure_future(self._sample_usage())
        return dict(sample.figures)

    async def _sample_usage(self) -> None:
        while self._usage:
            for ref, sample in list(self._usage.items()):
                if time.monotonic() - sample.asked > USAGE_FORGET_S:
                    del self._usage[ref]  # no one asks any more: stopped, or never again
                    continue
                try:  # the first read waits for the engine's two samples; then one-shot
                    stats = await asyncio.to_thread(
                        self.client.api.stats, ref, stream=False,
                        one_shot=sample.cpu is not None)
                except Exception:  # stats are best-effort: a container going away has none
                    sample.figures = {}
                    continue
                sample.update(stats)
            await asyncio.sleep(USAGE_PERIOD_S)

    async def logs(self, handle: RuntimeHandle, tail: int = 50) -> str:
        return await self._call(self._logs, handle, tail)

    # --- inside a running session -------------------------------------------------------

    def _exec(self, ref: str, argv: list[str], env: dict[str, str], lines: LineSplitter
              ) -> int:
        api = self.client.api
        exec_id = api.exec_create(ref, argv, user=SESSION_USER, environment=env,
                                  workdir=WORKSPACE)["Id"]
        for chunk in api.exec_start(exec_id, stream=True):
            lines.feed(chunk)
        lines.flush()
        code = api.exec_inspect(exec_id).get("ExitCode")
        return -1 if code is None else int(code)

    async def exec(self, handle: RuntimeHandle, argv: list[str], env: dict[str, str],
                   on_line: Callable[[str], None]) -> int:
        loop = asyncio.get_running_loop()
        lines = LineSplitter(lambda line: loop.call_soon_threadsafe(on_line, line))
        return await self._call(self._exec, handle.ref, argv, env, lines)

    def _save_env(self, ref: str, dest: Path) -> int:
        stream, _ = self.client.containers.get(ref).get_archive(SESSION_ENV)
        with open(dest, "wb") as out:
            for chunk in stream:
                out.write(chunk)
        return dest.stat().st_size

    async def save_env(self, handle: RuntimeHandle, dest: Path) -> int:
        return await self._call(self._save_env, handle.ref, dest)

    def _restore_env(self, ref: str, src: Path) -> None:
        # the engine extracts inside the container's file system (no path leaves it); the
        # members keep the session user's ownership that get_archive recorded
        with open(src, "rb") as data:
            if not self.client.api.put_archive(ref, SESSION_ENV.rsplit("/", 1)[0], data):
                raise RuntimeError_("the Docker engine did not take the prepared environment")

    async def restore_env(self, handle: RuntimeHandle, src: Path) -> None:
        await self._call(self._restore_env, handle.ref, src)

    async def close(self) -> None:
        for session_id in list(self._relays):
            await self._close_relay(session_id)
        if self._sampler is not None:
            self._sampler.cancel()
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)
