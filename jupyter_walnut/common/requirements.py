"""Requirements a renter asks the provider to install at launch (issue #15, contract C4):
checked, normalized and hashed here, by the same rules on both sides (the renter refuses a
bad file before any money moves; the provider refuses it again, trusting no renter);
installed by provider/environment_prep.py.

Only plain requirements are taken (`pandas==2.2.3`, `scipy>=1.11`, `requests[socks]`, with
markers): pip would read an option line (-r, -c, -e, -f, --index-url, ...), a path or a URL
as an instruction to read files of the session or to install from somewhere else than the
provider's own package cache. Each such line is refused with a 400 that names it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import BadRequest

MAX_REQUIREMENTS_BYTES = 64 * 1024


class RequirementsError(BadRequest):
    """Requirements that cannot be installed (400): unreadable, too large, or a line pip would
    take as an option, a path or a URL; the message names the line."""


_COMMENT = re.compile(r"(^|\s)#")
_ARCHIVE = re.compile(r"\.(whl|zip|tar|tar\.\w+|tgz|tbz2?|txz)$")  # pip reads these as files


@dataclass(frozen=True)
class Requirements:
    """The normalized requirements: one canonical requirement per line, sorted, no
    duplicates, no comments; the same set written differently has the same `hash`."""

    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def __bool__(self) -> bool:
        return bool(self.lines)


def _canonical(req: Requirement) -> str:
    extras = f"[{','.join(sorted(canonicalize_name(e) for e in req.extras))}]" \
        if req.extras else ""
    marker = f"; {req.marker}" if req.marker is not None else ""
    return f"{canonicalize_name(req.name)}{extras}{req.specifier}{marker}"


def _refuse(number: int, line: str, why: str) -> RequirementsError:
    return RequirementsError(f"requirements line {number} ({line[:100]!r}): {why}")


def parse_requirements(text: object) -> Requirements:
    """`text` checked line by line; RequirementsError names the first line refused."""
    if not isinstance(text, str):
        raise RequirementsError("requirements: must be a string (pip requirements text)")
    if len(text.encode()) > MAX_REQUIREMENTS_BYTES:
        raise RequirementsError(f"requirements: larger than {MAX_REQUIREMENTS_BYTES // 1024} "
                                "KiB")
    if "\x00" in text:
        raise RequirementsError("requirements: must be text (a NUL byte was found)")
    lines: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.split(raw, maxsplit=1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise _refuse(number, line, "options such as -r, -c, -e, -f or --index-url are "
                                        "not accepted: the provider installs from its own "
                                        "package index")
        lowered = line.lower()
        if "://" in line or lowered.startswith("file:") or line.startswith((".", "/", "~")) \
                or "\\" in line or _ARCHIVE.search(lowered):
            raise _refuse(number, line, "paths and URLs are not accepted: name a package, "
                                        "e.g. pandas==2.2.3")
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(f"requirements line {number} ({line[:100]!r}) is not a "
                                    f"requirement: {str(exc).splitlines()[0][:200]}") from None
        if req.url:
            raise _refuse(number, line, "URL requirements are not accepted")
        lines.add(_canonical(req))
    return Requirements(tuple(sorted(lines)))
