"""Kernel bookkeeping that stays true after a kernel dies and is restarted.

jupyter_server records a kernel's `execution_state` from its IOPub status messages. When a
kernel dies mid-cell (killed by the memory limit, say) and the restarter brings up a new one,
no `idle` ever follows the last `busy` and the new kernel's `starting` is published before
anyone listens, so the REST model said `busy` for ever. Here a death sets the state to
`restarting` with a reason (out of memory when the session's cgroup counted an OOM kill),
and the state turns `idle` once the new kernel answers a kernel_info request.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kernel_gateway.services.kernels.manager import SeedingMappingKernelManager

from .workspace import inside, refused, resolve, workspace_root

CGROUP = Path("/sys/fs/cgroup")
RESTART_READY_TIMEOUT_S = 60


def kernel_cwd(root: str, working_dir: str | None) -> str:
    """Where a kernel starts: the workspace, or KERNEL_WORKING_DIR (a folder in it, given
    relative to it or as an absolute path inside it); 400 for anything else."""
    if not working_dir:
        return root
    if working_dir.startswith("/"):
        real = os.path.realpath(working_dir)
        if not inside(root, real):
            raise refused(f"KERNEL_WORKING_DIR {working_dir!r} is outside the session's "
                          f"workspace {root!r}")
        os_path = real
    else:
        os_path = resolve(root, working_dir.strip("/"), allow_root=True)
    if not os.path.isdir(os_path):
        raise refused(f"KERNEL_WORKING_DIR {working_dir!r} is not a folder of the workspace")
    return os_path


def _read_fields(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(None, 1) for line in lines if " " in line)


def oom_kill_count(root: Path = CGROUP) -> int | None:
    """OOM kills counted by this process's memory cgroup (v2 or v1), or None if unreadable."""
    for path in (root / "memory.events", root / "memory" / "memory.oom_control"):
        value = _read_fields(path).get("oom_kill")
        if value is not None:
            return int(value)
    return None


def memory_limit_mib(root: Path = CGROUP) -> int | None:
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        return int(text) // 2**20 if text.isdigit() else None
    return None


class WalnutMappingKernelManager(SeedingMappingKernelManager):
    # Only a container's cgroup is the session's own: elsewhere an OOM kill may be anyone's.
    _cgroup_is_ours = os.environ.get("WALNUT_SESSION_CGROUP") == "1"
    _oom_seen: int | None = None

    def cwd_for_path(self, path, **kwargs) -> str:  # type: ignore[override]
        root = workspace_root()
        os_path = resolve(root, (path or "").strip("/"), allow_root=True)
        while not os.path.isdir(os_path) and os_path != root:
            os_path = os.path.dirname(os_path)
        return os_path

    async def start_kernel(self, *args, **kwargs) -> str:  # type: ignore[override]
        working_dir = (kwargs.get("env") or {}).get("KERNEL_WORKING_DIR")
        if working_dir or kwargs.get("path") is None:
            # kernels start in the workspace (or the folder asked for) whatever the gateway's cwd
            kwargs["cwd"] = kernel_cwd(workspace_root(), working_dir)
            kwargs.pop("path", None)
        kernel_id = await super().start_kernel(*args, **kwargs)
        self._oom_seen = self._oom_count()
        self.add_restart_callback(kernel_id, lambda: self._on_kernel_died(kernel_id), "restart")
        return kernel_id

    def _oom_count(self) -> int | None:
        return oom_kill_count() if self._cgroup_is_ours else None

    def _on_kernel_died(self, kernel_id: str) -> None:
        """Called by the restarter right before it starts a new kernel process."""
        kernel = self._kernels.get(kernel_id)
        if kernel is None:
            return
        count = self._oom_count()
        if count is not None and count > (self._oom_seen or 0):
            limit = memory_limit_mib()
            within = f" of {limit} MiB" if limit else ""
            kernel.reason = (f"The kernel ran out of the session's memory{within} and was "
                             "restarted; its variables are gone.")
        else:
            kernel.reason = "The kernel died and was restarted; its variables are gone."
        self._oom_seen = count
        self.log.warning("Kernel %s died: %s", kernel_id, kernel.reason)
        kernel.execution_state = "restarting"
        asyncio.ensure_future(self._mark_idle_when_ready(kernel_id))

    async def _mark_idle_when_ready(self, kernel_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESTART_READY_TIMEOUT_S
        kernel = self._kernels.get(kernel_id)
        # the restarter replaces the process after our callback returns: wait for the new one
        while kernel is not None and not await kernel.is_alive():
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.1)
            kernel = self._kernels.get(kernel_id)
        if kernel is None:
            return
        client = kernel.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=max(1.0, deadline - loop.time()))
        except RuntimeError:
            return  # died again: the restarter's next callback takes over
        finally:
            client.stop_channels()
        if kernel.execution_state == "restarting":
            kernel.execution_state = "idle"
