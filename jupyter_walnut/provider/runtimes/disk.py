"""Size-limited session workspaces: one sparse ext4 image per session on a loop device.

overlay2 on ext4 (the common Docker setup) has no `--storage-opt size`, so the Docker runtime
gives each session a file of exactly its allowance, formatted ext4 and attached to a loop
device, and mounts that device as the session's workspace volume. Writing past the allowance
fails with ENOSPC inside the session; the provider's own disk grows by at most the file's size.
The file is sparse (blocks are allocated as the session writes) and mounted with `discard`,
so deleted files give their space back. Needs root (losetup), like the Docker engine itself.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from .base import RuntimeError_

SESSION_UID = 1000  # the session's user in the gateway image


def _run(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError_(f"could not prepare the session disk ({args[0]}: {exc})") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError_(f"could not prepare the session disk ({args[0]}: "
                            f"{detail[-1] if detail else f'exit code {done.returncode}'})")
    return done.stdout


class WorkspaceDisks:
    """The disk images of this provider's sessions, under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def image(self, name: str) -> Path:
        return self.directory / f"{name}.ext4"

    def create(self, name: str, size_mb: int) -> str:
        """A fresh empty workspace of `size_mb` MiB owned by the session user; its loop device."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.remove(name)  # a leftover of a crashed start must not be handed to a new renter
        path = self.image(name)
        with open(path, "xb") as fh:
            fh.truncate(size_mb * 1024 * 1024)
        try:
            owner = f"root_owner={SESSION_UID}:{SESSION_UID}"
            _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", owner, str(path))
            _run("debugfs", "-w", "-R", "rmdir lost+found", str(path))  # an empty workspace
            return _run("losetup", "--find", "--show", str(path)).strip()
        except BaseException:
            self.remove(name)
            raise

    def devices(self, name: str) -> list[str]:
        """Loop devices backed by a session's image (normally one)."""
        path = self.image(name)
        if not path.exists():
            return []
        out = _run("losetup", "--noheadings", "--output", "NAME", "--associated", str(path))
        return [line.strip() for line in out.splitlines() if line.strip()]

    def remove(self, name: str) -> None:
        """Detach and delete a session's disk; idempotent. A device still mounted is detached
        by the kernel when its last user unmounts it (losetup -d sets autoclear)."""
        for device in self.devices(name):
            with contextlib.suppress(RuntimeError_):
                _run("losetup", "--detach", device)
        self.image(name).unlink(missing_ok=True)

    def allocated_bytes(self, name: str) -> int:
        """Bytes of the provider's disk the session's image takes now."""
        try:
            return self.image(name).stat().st_blocks * 512
        except FileNotFoundError:
            return 0
