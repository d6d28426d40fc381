"""Names in a session's workspace and where they may land on the renter's disk.

Every name a provider sends (a manifest's paths) is checked here before it is used, and a
pulled file is written only below the destination the renter chose: no '..', no absolute
path, no control character, no symlink followed or created on the way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import quote

from ..errors import RenterError

MAX_NAME = 4096  # a workspace path, in characters


class PathRefused(RenterError):
    """A name that would reach outside its workspace or its destination folder."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def clean_remote(path: str, *, allow_root: bool = False) -> str:
    """A workspace path ('/'-separated, relative), checked; '' is the workspace root."""
    if not isinstance(path, str):
        raise PathRefused("a workspace path must be a string")
    text = path.strip("/") if allow_root else path
    if text in ("", ".") and allow_root:
        return ""
    if len(text) > MAX_NAME:
        raise PathRefused("a workspace path is too long")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise PathRefused(f"{_show(text)}: absolute paths are refused")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise PathRefused(f"{_show(text)}: control characters are refused")
    if "\\" in text:
        raise PathRefused(f"{_show(text)}: backslashes are refused")
    parts = text.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PathRefused(f"{_show(text)}: empty, '.' and '..' segments are refused")
    return text


def join_remote(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def url_path(path: str) -> str:
    return quote(path, safe="/")


def relative_to(remote_dir: str, path: str) -> str:
    """`path` (a manifest entry) below `remote_dir`, as a relative name; refused when the
    provider names something outside the folder asked for."""
    name = clean_remote(path)
    if not remote_dir:
        return name
    if not name.startswith(remote_dir + "/"):
        raise PathRefused(f"{_show(name)} is not inside {_show(remote_dir)}")
    return name[len(remote_dir) + 1:]


def local_target(root: Path, rel: str) -> Path:
    """Where `rel` (checked) lands below `root`; parent folders are made one by one and
    none may be a symlink or anything but a folder, nor may the file itself be a link."""
    rel = clean_remote(rel)
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(mode):
            raise PathRefused(f"{current}: not a folder (symlinks are never followed)")
    target = current / rel.split("/")[-1]
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(mode):
        raise PathRefused(f"{target}: exists and is not a regular file")
    return target


def under_root(root_dir: str, rel: object, field: str) -> Path:
    """A local path a server's client names relative to the server root (as the file
    browser does); refused outside it."""
    if not isinstance(rel, str):
        raise PathRefused(f"{field} must be a path relative to the server root")
    root = Path(root_dir).expanduser().resolve()
    path = (root / rel.strip("/")).resolve() if rel.strip("/") else root
    if path != root and root not in path.parents:
        raise PathRefused(f"{field}: {rel[:200]!r} is outside the server root")
    return path


def _show(text: str) -> str:
    return repr(text[:200])
