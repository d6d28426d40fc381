"""What of a local folder goes to a session: its regular files minus the `.gitignore` and
`.walnutignore` rules (each file's rules apply below its own folder, as git reads them),
never a symlink, the size checked against the cap before anything is sent, and content
hashes so that the client sends only the files the workspace does not already hold."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import GitIgnoreSpec

from ..errors import RenterError

IGNORE_FILES = (".gitignore", ".walnutignore")
# never sent: git's own store, Jupyter's checkpoints, and what came back from sessions
ALWAYS_IGNORED = [".git/", ".ipynb_checkpoints/", "walnut-results/"]
MAX_FILES = 100_000
PIECE = 1 << 20


class TransferError(RenterError):
    """A push or pull that failed or was refused; its message is one line for the user."""


@dataclass
class LocalFile:
    rel: str  # '/'-separated, relative to the folder sent
    path: Path
    size: int
    sha256: str = ""


@dataclass
class Plan:
    root: Path
    files: list[LocalFile] = field(default_factory=list)
    ignored: int = 0  # files left out by the ignore rules
    links: int = 0  # symlinks left out

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def check_cap(self, cap: int) -> None:
        """Refuse a folder over `cap` bytes, before a byte of it is sent."""
        if self.size > cap:
            raise TransferError(413, f"{self.root}: {len(self.files)} files, "
                                   f"{human_bytes(self.size)}, over the "
                                   f"{human_bytes(cap)} limit; nothing was sent (leave "
                                   "files out with .walnutignore)")

    def hash_all(self) -> None:
        hash_files(self.files)


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def hash_files(files: list[LocalFile]) -> None:
    for f in files:
        f.sha256 = file_sha256(f.path)
        if f.path.stat().st_size != f.size:
            raise TransferError(409, f"{f.path} changed while being read")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(PIECE):
            digest.update(piece)
    return digest.hexdigest()


def _rules(directory: Path) -> GitIgnoreSpec | None:
    lines: list[str] = []
    for name in IGNORE_FILES:
        path = directory / name
        if path.is_file() and not path.is_symlink():
            lines += path.read_text(errors="replace").splitlines()
    return GitIgnoreSpec.from_lines(lines) if lines else None


def scan(root: Path, extra_ignore: list[str] | None = None) -> Plan:
    """The files of `root` to send, symlinks never followed."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise TransferError(400, f"{root}: not a folder")
    plan = Plan(root)
    base = GitIgnoreSpec.from_lines([*ALWAYS_IGNORED, *(extra_ignore or [])])
    specs: list[tuple[str, GitIgnoreSpec]] = [("", base)]  # (folder rel to root, rules)

    def ignored(rel: str, is_dir: bool) -> bool:
        name = rel + ("/" if is_dir else "")
        for folder, spec in specs:
            if folder and not name.startswith(folder + "/"):
                continue
            if spec.match_file(name[len(folder) + 1:] if folder else name):
                return True
        return False

    def walk(folder: Path, rel: str) -> None:
        own = _rules(folder)
        if own is not None:
            specs.append((rel, own))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    plan.links += 1
                elif stat.S_ISDIR(mode):
                    if not ignored(child, True):
                        walk(Path(entry.path), child)
                elif stat.S_ISREG(mode):
                    if ignored(child, False):
                        plan.ignored += 1
                        continue
                    plan.files.append(LocalFile(child, Path(entry.path),
                                                entry.stat(follow_symlinks=False).st_size))
                    if len(plan.files) > MAX_FILES:
                        raise TransferError(413, f"{root}: more than {MAX_FILES:,} files; "
                                               "leave some out with .walnutignore")
        finally:
            if own is not None:
                specs.pop()

    walk(root, "")
    return plan
