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
import tarfile
from collections.abc import Callable
from pathlib import Path

import psutil

from .base import LineSplitter, Runtime, RuntimeError_, RuntimeHandle, RuntimeState, SessionSpec

_RECORD = "gateway.json"
# pip settings the provider gives sessions; the host's other PIP_* never reach a session
_SESSION_PIP = ("PIP_INDEX_URL", "PIP_TRUSTED_HOST")


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


def _marked(session_id: str) -> list[psutil.Process]:
    """Processes of the session that left its tree (a kernel's `Popen(start_new_session=
    True)` outliving that kernel is adopted by init): they still carry its environment.
    A process that scrubs it escapes; the Docker runtime is the boundary for hostile code."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("WALNUT_SESSION_ID") == session_id:
                found.append(proc)
        except psutil.Error:  # gone, or another user's
            continue
    return found


def _limits(spec: SessionSpec):
    def apply() -> None:
        os.setsid()  # own process group: stop() kills kernels too
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        nproc = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, nproc), min(4096, nproc)))

    return apply


class ProcessRuntime(Runtime):
    name = "process"
    can_exec = True

    def __init__(self, state_dir: Path, python: str = sys.executable) -> None:
        """`state_dir/<session id>/` holds each session's record, log and workspace."""
        self.state_dir = Path(state_dir)
        self.python = python
        self._procs: dict[str, subprocess.Popen] = {}
        self._samplers: dict[int, psutil.Process] = {}
        self._envs: dict[str, dict[str, str]] = {}  # the gateway's environment, by session

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
                  "log": str(log_path), "workspace": str(spec.workspace)}
        self._envs[spec.session_id] = env
        self._record_path(spec.session_id).write_text(json.dumps(record))
        return handle

    async def stop(self, handle: RuntimeHandle) -> None:
        pid = int(handle.ref)
        proc = self._procs.pop(handle.session_id, None)
        self._envs.pop(handle.session_id, None)
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
        leftovers = descendants + _marked(handle.session_id)  # what outlived the gateway
        for child in leftovers:
            try:
                child.kill()
            except psutil.Error:
                pass
        # stopped means gone: no port of the session still answers once stop returns
        await asyncio.to_thread(psutil.wait_procs, leftovers, timeout=5)
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

    # --- inside a running session -------------------------------------------------------

    def _workspace(self, session_id: str) -> Path:
        try:
            return Path(json.loads(self._record_path(session_id).read_text())["workspace"])
        except (OSError, ValueError, KeyError) as exc:
            raise RuntimeError_(f"session {session_id} has no workspace here") from exc

    def _env_dir(self, session_id: str) -> Path:
        return self._workspace(session_id) / ".walnut" / "env"

    async def exec(self, handle: RuntimeHandle, argv: list[str], env: dict[str, str],
                   on_line: Callable[[str], None]) -> int:
        base = self._envs.get(handle.session_id)
        if base is None:
            raise RuntimeError_(f"session {handle.session_id} was not started by this process")
        full = {k: v for k, v in base.items()
                if not k.startswith("PIP_") or k in _SESSION_PIP}
        full["WALNUT_SESSION_ENV"] = str(self._env_dir(handle.session_id))
        full.update(env)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self._workspace(handle.session_id), env=full,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        lines = LineSplitter(on_line)
        try:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                lines.feed(chunk)
            lines.flush()
            return await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: the command goes with the wait
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await proc.wait()

    async def save_env(self, handle: RuntimeHandle, dest: Path) -> int:
        env_dir = self._env_dir(handle.session_id)

        def write() -> int:
            with tarfile.open(dest, "w") as tar:
                tar.add(env_dir, arcname="env")
            return dest.stat().st_size

        return await asyncio.to_thread(write)

    async def restore_env(self, handle: RuntimeHandle, src: Path) -> None:
        env_dir = self._env_dir(handle.session_id)

        def extract() -> None:
            with tarfile.open(src) as tar:
                members = [m for m in tar.getmembers() if _restorable(m, env_dir)]
                tar.extractall(env_dir.parent, members=members, filter="tar")
            _rebase_scripts(env_dir)

        await asyncio.to_thread(extract)


def _restorable(member: tarfile.TarInfo, env_dir: Path) -> bool:
    """The installed files of a saved env: not the interpreter links and wrappers the new
    session's gateway already wrote for its own path (bin/python, bin/pip, pyvenv.cfg)."""
    parts = Path(member.name).parts
    if not parts or parts[0] != "env" or ".." in parts:
        return False
    target = env_dir.parent / member.name
    return member.isdir() or not (target.exists() or target.is_symlink())


def _rebase_scripts(env_dir: Path) -> None:
    """Console scripts pip wrote name the saving session's python on their #! line: this
    session's instead (every session env has its own path in the process runtime)."""
    python = str(env_dir / "bin" / "python")
    for script in (env_dir / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        with open(script, "rb") as fh:
            first = fh.readline()
        if not first.startswith(b"#!") or not first.rstrip().endswith(b"/.walnut/env/bin/python"):
            continue
        rest = script.read_bytes()[len(first):]
        script.write_bytes(f"#!{python}\n".encode() + rest)
