"""The names a session's results may have (issue #16), one rule for both roles: the provider
checks what a session's gateway lists, the renter what a provider's archive holds."""

from __future__ import annotations

import re

# the session's machinery, never its results: its Python env ($HOME/.walnut), partial
# uploads, and (process runtime, HOME is the workspace) the kernel's runtime and caches
SESSION_DIRS = (".walnut", ".walnut-uploads", ".runtime", ".ipython", ".local", ".cache",
                ".jupyter")
MAX_PATH = 4096
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def checked_path(name: object) -> str | None:
    """`name` if it may be a file of the results: relative, '/'-separated, no '..', '.',
    empty segment, backslash or control character, no segment over 255 bytes; else None."""
    if not isinstance(name, str) or not name or len(name) > MAX_PATH or \
            _BAD_CHARS.search(name):
        return None
    if any(p in ("", ".", "..") or len(p.encode()) > 255 for p in name.split("/")):
        return None
    return name


def is_session_dir(path: str) -> bool:
    """Whether `path` lies in the session's own machinery (never saved)."""
    return path.split("/", 1)[0] in SESSION_DIRS
