"""Session gateways as local subprocesses: the embedded default when no Docker engine runs.

Each gateway runs in its own process group and working directory, with the resource limits
that `setrlimit` can give. It is not a sandbox: use the Docker runtime for strangers' code.
It cannot enforce a shape's disk allowance (`disk_mb`) or the egress policy: the workspace is
a directory on the provider's disk and the gateway shares the host's network. It is the
cheap development leg.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from .base import Runtime, RuntimeError_, RuntimeHandle, RuntimeState, SessionSpec

_RECORD = "gateway.json"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _limits(spec: SessionSpec):
    def apply() -> None:
        os.setsid()  # own process group: stop() kills kernels too
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        nproc = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, nproc), min(4096, nproc)))

    return apply


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, state_dir: Path, python: str = sys.executable) -> None:
        """`state_dir/<session id>/` holds each session's record, log and workspace."""
        self.state_dir = Path(state_dir)
        self.python = python
        self._procs: dict[str, subprocess.Popen] = {}
        self._samplers: dict[int, psutil.Process] = {}

    def _record_path(self, session_id: str) -> Path:
        return self.state_dir / session_id / _RECORD

    async def start(self, spec: SessionSpec) -> RuntimeHandle:
        spec.workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
        port = free_port()
        env = {
            k: v for k, v in os.environ.items()
            # the host's pip settings point at host paths: sessions get only the provider's
            if not k.startswith(("WALNUT_", "JUPYTER_TOKEN", "KG_", "PIP_"))
        }
        env.update(spec.gateway_env(
            "127.0.0.1", port, home=str(spec.workspace),
            runtime_dir=str(spec.workspace / ".runtime"),
            CUDA_VISIBLE_DEVICES=",".join(str(g) for g in spec.gpus)))
        log_path = self.state_dir / spec.session_id / "gateway.log"
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "walnut_gateway"],
                cwd=spec.workspace, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_limits(spec), close_fds=True,
            )
        except OSError as exc:
            raise RuntimeError_(f"could not start the gateway process: {exc}") from exc
        finally:
            log.close()
        self._procs[spec.session_id] = proc
        handle = RuntimeHandle(spec.session_id, f"http://127.0.0.1:{port}", str(proc.pid))
        record = {"session_id": spec.session_id, "pid": proc.pid, "url": handle.gateway_url,
                  "log": str(log_path)}
        self._record_path(spec.session_id).write_text(json.dumps(record))
        return handle

    async def stop(self, handle: RuntimeHandle) -> None:
        pid = int(handle.ref)
        proc = self._procs.pop(handle.session_id, None)
        # kernels run in sessions of their own (jupyter_client's start_new_session):
        # note them now, the gateway's process group does not contain them
        descendants = _descendants(pid)
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            for _ in range(50):
                if proc is not None and proc.poll() is not None:
                    break
                if proc is None and not _pid_alive(pid):
                    break
                await asyncio.sleep(0.1)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for child in descendants:  # whatever the gateway did not shut down itself
            try:
                child.kill()
            except psutil.Error:
                pass
        # the session directory holds its workspace: wiped so the next renter sees nothing
        shutil.rmtree(self.state_dir / handle.session_id, ignore_errors=True)

    async def state(self, handle: RuntimeHandle) -> RuntimeState:
        proc = self._procs.get(handle.session_id)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return RuntimeState(True)
            return RuntimeState(False, f"gateway process exited with code {code}")
        if _pid_alive(int(handle.ref)):
            return RuntimeState(True)
        return RuntimeState(False, "gateway process is gone")

    async def adopt(self) -> list[RuntimeHandle]:
        handles = []
        for record in sorted(self.state_dir.glob(f"*/{_RECORD}")):
            try:
                data = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            if _pid_alive(int(data["pid"])):
                handles.append(RuntimeHandle(data["session_id"], data["url"], str(data["pid"])))
        return handles

    async def usage(self, handle: RuntimeHandle) -> dict:
        procs = [*_descendants(int(handle.ref))]
        try:
            procs.append(psutil.Process(int(handle.ref)))
        except psutil.Error:
            return {}
        cpu = memory = 0.0
        for proc in procs:
            try:
                cpu += self._cpu_sampler(proc)
                memory += proc.memory_info().rss
            except psutil.Error:
                continue
        return {"cpu_pct": round(cpu, 1), "memory_used_mb": int(memory // (1024 * 1024))}

    def _cpu_sampler(self, proc: psutil.Process) -> float:
        # cpu_percent needs the same Process object across calls to measure an interval
        cached = self._samplers.setdefault(proc.pid, proc)
        return cached.cpu_percent(interval=None)

    async def logs(self, handle: RuntimeHandle, tail: int = 50) -> str:
        record = self._record_path(handle.session_id)
        try:
            log_path = Path(json.loads(record.read_text())["log"])
            lines = log_path.read_text(errors="replace").splitlines()
        except (OSError, ValueError, KeyError):
            return ""
        return "\n".join(lines[-tail:])
