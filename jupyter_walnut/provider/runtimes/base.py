"""The interface every session runtime implements."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...common.errors import Unavailable

GATEWAY_CONTAINER_PORT = 8888


class RuntimeError_(Unavailable):
    """A runtime could not start or reach a session (503); the message is safe to show a
    renter."""


@dataclass(frozen=True)
class SessionSpec:
    """What a session's gateway gets; the runtime enforces the limits."""

    session_id: str
    image: str  # image reference (Docker) or image name (process: informational)
    gpus: tuple[int, ...]  # host GPU indices given to this session only
    cpus: float
    memory_mb: int
    gateway_token: str  # internal token between the provider proxy and this gateway
    workspace: Path  # per-session writable directory on the provider's host
    max_kernels: int = 4
    pids_limit: int = 512
    disk_mb: int = 10240  # the workspace and /tmp allowance (the process runtime cannot enforce)
    egress: str = "internet"  # internet | offline (config.EGRESS; the process runtime cannot)
    env: dict[str, str] = field(default_factory=dict)

    def gateway_env(self, ip: str, port: int, home: str, runtime_dir: str,
                    **extra: str) -> dict[str, str]:
        """The session's own variables plus what walnut_gateway reads at start."""
        return {
            **self.env,
            "WALNUT_GATEWAY_TOKEN": self.gateway_token,
            "WALNUT_GATEWAY_IP": ip,
            "WALNUT_GATEWAY_PORT": str(port),
            "WALNUT_MAX_KERNELS": str(self.max_kernels),
            "WALNUT_SESSION_ID": self.session_id,
            "HOME": home,
            "WALNUT_WORKSPACE": home,  # the root of the session's file API (walnut_gateway)
            "JUPYTER_RUNTIME_DIR": runtime_dir,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }


@dataclass(frozen=True)
class RuntimeHandle:
    """How to reach and identify a running session gateway; persisted by the provider."""

    session_id: str
    gateway_url: str  # e.g. http://127.0.0.1:49153
    ref: str  # container id, or process id


@dataclass(frozen=True)
class RuntimeState:
    running: bool
    reason: str = ""  # why it is not running, in words (exit code, OOM, ...)


class Runtime(abc.ABC):
    """Starts, watches and stops session gateways."""

    name: str = "abstract"
    can_exec: bool = False  # implements exec/save_env/restore_env (requirements at launch)

    @abc.abstractmethod
    async def start(self, spec: SessionSpec) -> RuntimeHandle:
        """Start the gateway; returns once it was started (readiness is checked by the caller)."""

    @abc.abstractmethod
    async def stop(self, handle: RuntimeHandle) -> None:
        """Stop and remove everything the session had; idempotent."""

    @abc.abstractmethod
    async def state(self, handle: RuntimeHandle) -> RuntimeState:
        """Whether the gateway is still running, and why not if it stopped."""

    @abc.abstractmethod
    async def adopt(self) -> list[RuntimeHandle]:
        """Session gateways still running from an earlier provider process."""

    async def usage(self, handle: RuntimeHandle) -> dict:
        """Live CPU percent and memory of the session (`cpu_pct`, `memory_used_mb`)."""
        return {}

    async def logs(self, handle: RuntimeHandle, tail: int = 50) -> str:
        """Recent gateway output, for failure reasons."""
        return ""

    # --- inside a running session (requirements at launch, environment_prep.py) ---------

    async def exec(self, handle: RuntimeHandle, argv: list[str], env: dict[str, str],
                   on_line: Callable[[str], None]) -> int:
        """Run `argv` inside the session as the session's own user (uid 1000 in a container)
        with `env` added to the session's environment; `on_line` gets each line of its output
        (stdout and stderr, on the event loop) as it comes. Returns the exit code; cancelling
        it stops waiting (the caller stops the session)."""
        raise RuntimeError_(f"the {self.name} runtime cannot run commands in a session")

    async def save_env(self, handle: RuntimeHandle, dest: Path) -> int:
        """Write a tar of the session's Python environment (`$HOME/.walnut/env`, members
        under `env/`) to `dest`; returns its size in bytes."""
        raise RuntimeError_(f"the {self.name} runtime cannot copy a session environment")

    async def restore_env(self, handle: RuntimeHandle, src: Path) -> None:
        """Put a tar written by `save_env` back as the session's environment, owned by the
        session's user."""
        raise RuntimeError_(f"the {self.name} runtime cannot copy a session environment")

    async def close(self) -> None:
        """Release runtime resources (clients, not sessions)."""


class LineSplitter:
    """Bytes of a command's output as whole lines (a trailing partial line on `flush`)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self._rest = b""

    def feed(self, data: bytes) -> None:
        *lines, self._rest = (self._rest + data).replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            self.emit(line.decode(errors="replace"))

    def flush(self) -> None:
        if self._rest:
            self.emit(self._rest.decode(errors="replace"))
            self._rest = b""
