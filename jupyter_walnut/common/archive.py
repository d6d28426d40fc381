"""Unpacking a job's results archive. The provider made it, so it is hostile input: only
regular files and folders, every path inside the target, within a member and size budget;
anything else refuses the whole archive and leaves nothing behind."""

from __future__ import annotations

import os
import secrets
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import BadRequest

MAX_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 1 << 30
CHUNK = 1 << 20
FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)  # not sparse, contiguous or link types


class ArchiveError(BadRequest, ValueError):
    """The archive was refused; the message says which member and why."""


def member_path(name: str) -> PurePosixPath:
    """The relative path a member may have: no absolute path, no `..`, nothing odd."""
    path = PurePosixPath(name)
    if not name or "\0" in name or "\\" in name or path.is_absolute() or \
            any(part == ".." for part in path.parts) or not path.parts:
        raise ArchiveError(f"{name[:100]!r}: a path outside the results folder")
    return path


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isdev() or member.isfifo():
        return "device or pipe"
    return f"member of type {member.type!r}"


def extract(archive: Path, target: Path, *, max_members: int = MAX_MEMBERS,
            max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Unpack `archive` (.tar.gz) into `target`, replacing it; all or nothing."""
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    staging.mkdir(parents=True)
    try:
        _unpack(archive, staging, max_members, max_bytes)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(f"not a readable .tar.gz: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _unpack(archive: Path, root: Path, max_members: int, max_bytes: int) -> None:
    count = total = 0
    with tarfile.open(archive, mode="r|gz") as tar:  # a stream: headers read one by one
        for member in tar:
            count += 1
            if count > max_members:
                raise ArchiveError(f"more than {max_members} members")
            rel = member_path(member.name)
            dest = root.joinpath(*rel.parts)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            if member.type not in FILE_TYPES:
                raise ArchiveError(f"{member.name[:100]!r}: a {_kind(member)}; results hold "
                                   "only files and folders")
            total += member.size
            if total > max_bytes:
                raise ArchiveError(f"more than {max_bytes} bytes once unpacked")
            dest.parent.mkdir(parents=True, exist_ok=True)
            _write(tar.extractfile(member), dest, member.name)


def _write(src, dest: Path, name: str) -> None:
    try:  # O_EXCL: a second member of the same name; O_NOFOLLOW: never through a link
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError as exc:
        raise ArchiveError(f"{name[:100]!r}: a member that appears twice") from exc
    with os.fdopen(fd, "wb") as out:
        while block := src.read(CHUNK):
            out.write(block)
