"""The session's workspace and the one check every file path of the gateway goes through.

The workspace is $WALNUT_WORKSPACE (the runtimes set it to the session's working directory),
else the gateway's working directory. A path from a request is relative to it and
'/'-separated; absolute paths, '.', '..', empty segments, NUL and control characters are
refused, and so is anything whose realpath (symlinks resolved) is outside the workspace: the
kernel runs the renter's code and may plant a symlink to /etc or to the gateway's own files.
"""

from __future__ import annotations

import os
import re

from tornado import web

# where the gateway keeps partial uploads, the session's own environment (env.py) and the
# process runtime's JUPYTER_RUNTIME_DIR (kernel connection files): none is part of the
# renter's files, so manifests skip them and walnut/fs refuses them
UPLOADS_DIR = ".walnut-uploads"
GATEWAY_OWN = frozenset({UPLOADS_DIR, ".walnut", ".runtime"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PathRefused(web.HTTPError):
    """400: a path that names nothing inside the workspace."""

    def __init__(self, path: str, why: str) -> None:
        # no format args: tornado formats log_message with them, so a '%' is doubled instead
        super().__init__(400, f"path {path!r} refused: {why}".replace("%", "%%"))


def refused(message: str) -> web.HTTPError:
    """400 with a message that may quote paths (no format args: tornado and the gateway's JSON
    errors use log_message as is when there are none, so a '%' is doubled for the former)."""
    return web.HTTPError(400, message.replace("%", "%%"))


def workspace_root() -> str:
    return os.path.realpath(os.environ.get("WALNUT_WORKSPACE") or os.getcwd())


def inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root + os.sep)


def check_segments(path: str) -> list[str]:
    """The segments of a relative API path, or PathRefused."""
    if _CONTROL.search(path):
        raise PathRefused(path, "NUL or control characters")
    if path.startswith("/") or path.startswith("\\"):
        raise PathRefused(path, "absolute paths are not allowed")
    if path == "":
        return []
    parts = path.split("/")
    for part in parts:
        if part == "":
            raise PathRefused(path, "empty path segment")
        if part in (".", ".."):
            raise PathRefused(path, "'.' and '..' are not allowed")
    return parts


def resolve(root: str, path: str, allow_root: bool = False) -> str:
    """The absolute path of `path` in the workspace `root` (a realpath), checked."""
    parts = check_segments(path)
    if not parts and not allow_root:
        raise PathRefused(path, "the workspace itself")
    os_path = os.path.join(root, *parts)
    if not inside(root, os.path.realpath(os_path)):
        raise PathRefused(path, "it leads outside the workspace")
    return os_path


def rel(root: str, os_path: str) -> str:
    """The API path of an absolute path inside the workspace."""
    relative = os.path.relpath(os_path, root)
    return "" if relative == "." else relative.replace(os.sep, "/")
