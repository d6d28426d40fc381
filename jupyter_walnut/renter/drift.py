"""Version drift: which packages differ between this machine and a remote session.

A pickle names the classes and functions it rebuilds by module, and unpickling rebuilds them
with whatever version of that module is installed on the other side: a pandas DataFrame
pickled by pandas 2.2 may not load, or may load wrong, under pandas 2.1. So before a pickled
push and after a pickled pull the renter asks the remote kernel for the versions of the
packages the value's pickle refers to and prints one warning line per package that differs.
At launch, the image's declared package versions (the offer) are compared the same way.

The remote kernel is the provider's: its answer is bounded, parsed strictly (a flat JSON
object of short names to short version strings) and anything else is ignored, never raised.
It is only ever displayed.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    from ..common.remote_kernel import RemoteKernel

MAX_PACKAGES = 64
MAX_ANSWER_BYTES = 16 * 1024
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}$")
# modules whose version is the interpreter's: never a package to compare
_SKIP = {"__main__", "builtins", "__builtin__", "copyreg", "_codecs"}

# Runs on both sides (exec'd here and sent as source there), so both answer the same way:
# the installed distribution version of each top-level module name, "python" for Python.
VERSIONS_SOURCE = r'''
def _walnut_versions(names):
    import importlib.metadata as md
    import platform
    out = {}
    try:
        dists = md.packages_distributions()
    except Exception:
        dists = {}
    for name in names:
        if name == "python":
            out[name] = platform.python_version()
            continue
        for dist in dists.get(name, [name]):
            try:
                out[name] = md.version(dist)
                break
            except Exception:
                pass
    return out
'''


def _versions_function():
    scope: dict[str, Any] = {}
    exec(compile(VERSIONS_SOURCE, "walnut_versions", "exec"), scope)
    return scope["_walnut_versions"]


def local_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions here, by top-level module name (missing ones left out)."""
    return _versions_function()(sorted(set(names)))


# --- which packages a value involves -------------------------------------------------------

class _Recorder(pickle.Pickler):
    """A pickler that writes nowhere and notes the module of every object, class and function
    it meets; out-of-band buffers are not copied, so a large array costs little."""

    def __init__(self) -> None:
        super().__init__(_Null(), protocol=5, buffer_callback=lambda buf: None)
        self.modules: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        self._note(type(obj).__module__)
        if isinstance(obj, type) or callable(obj):
            self._note(getattr(obj, "__module__", None))
        return NotImplemented

    def _note(self, module: object) -> None:
        if isinstance(module, str) and module:
            self.modules.add(module.split(".")[0])


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)


def value_packages(value: Any) -> set[str]:
    """Top-level third-party modules a pickle of `value` refers to (a pandas DataFrame:
    pandas, numpy). Whatever cannot be pickled plainly still names its own type's module."""
    rec = _Recorder()
    try:
        rec.dump(value)
    except Exception:  # a notebook function (cloudpickled by value), a lock, ...
        pass
    rec._note(type(value).__module__)
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    return {m for m in rec.modules
            if m not in _SKIP and m not in stdlib and not m.startswith("_") and NAME.match(m)}


# --- the remote side's answer ----------------------------------------------------------------

def parse_answer(text: str, marker: str) -> dict[str, str]:
    """The versions from the remote kernel's stdout: the one line after `marker`, a flat
    JSON object of at most MAX_PACKAGES name -> version strings. Anything else: {}."""
    if len(text) > MAX_ANSWER_BYTES:
        return {}
    lines = [line for line in text.splitlines() if line.startswith(marker)]
    if len(lines) != 1:
        return {}
    try:
        data = json.loads(lines[0][len(marker):])
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or len(data) > MAX_PACKAGES:
        return {}
    return {k: v for k, v in data.items()
            if isinstance(k, str) and isinstance(v, str) and NAME.match(k) and VERSION.match(v)}


async def remote_versions(kernel: RemoteKernel, names: Iterable[str],
                          timeout: float | None = None) -> dict[str, str]:
    """Ask the remote kernel (quietly, no history) for its versions of `names`."""
    names = sorted({n for n in names if NAME.match(n)})[:MAX_PACKAGES]
    if not names:
        return {}
    marker = f"walnut-versions-{secrets.token_hex(8)}:"
    code = (f"exec({VERSIONS_SOURCE + _PRINT!r}, "
            f"{{'NAMES': {names!r}, 'MARKER': {marker!r}}})")
    try:
        result = await kernel.execute(code, store_history=False,
                                      timeout=timeout or kernel.timeout)
    except Exception:  # a kernel that cannot answer: no warning rather than a failed run
        return {}
    if result.status != "ok":
        return {}
    return parse_answer(result.stdout, marker)


_PRINT = '''
import json as _json
print(MARKER + _json.dumps(_walnut_versions(NAMES)))
'''


# --- comparing -----------------------------------------------------------------------------

def _same(name: str, local: str, remote: str) -> bool:
    """Equal public versions (torch 2.13.0+cpu is torch 2.13.0); Python by major.minor."""
    try:
        a, b = Version(local), Version(remote)
    except InvalidVersion:
        return local == remote
    if name == "python":
        return a.release[:2] == b.release[:2]
    return a.public == b.public


def differences(local: Mapping[str, str], remote: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(name, local, remote) for each package known on both sides whose versions differ."""
    return [(n, local[n], remote[n]) for n in sorted(set(local) & set(remote))
            if not _same(n, local[n], remote[n])]


def transfer_warnings(local: Mapping[str, str], remote: Mapping[str, str]) -> list[str]:
    return [f"walnut: warning: {n}: local {lv}, remote {rv} — pickles may not round-trip"
            for n, lv, rv in differences(local, remote)]


async def check_transfer(kernel: RemoteKernel, values: Iterable[Any]) -> list[str]:
    """Warning lines for pickled values moving to or from `kernel`."""
    names: set[str] = set()
    for value in values:
        names |= value_packages(value)
    if not names:
        return []
    local = local_versions(names)
    if not local:
        return []
    return transfer_warnings(local, await remote_versions(kernel, local))


def launch_warnings(image: str, declared: Mapping[str, Any] | None,
                    names: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[str]:
    """Lines (no prefix) for the image's declared versions (from the offer) against the
    local ones of what `names` (imported module names; default: every declared package)
    covers, less `exclude` (what the launch installs at the versions it asks for). A package
    not installed here, or declarations that are not name -> version strings: no warning."""
    if not isinstance(declared, Mapping):
        return []
    remote = {k: v for k, v in list(declared.items())[:MAX_PACKAGES]
              if isinstance(k, str) and isinstance(v, str) and NAME.match(k) and VERSION.match(v)}
    if names is not None:  # module names (sklearn) or distributions (scikit-learn)
        used = {canonicalize_name(n) for n in _with_distributions(names)} | {"python"}
        remote = {k: v for k, v in remote.items() if canonicalize_name(k) in used}
    skip = {canonicalize_name(n) for n in exclude}
    remote = {k: v for k, v in remote.items() if canonicalize_name(k) not in skip}
    return [f"{n}: local {lv}, image {image!r} has {rv} — results and pickles may differ"
            for n, lv, rv in differences(local_versions(remote), remote)]


def required_names(requirements: str | None) -> set[str]:
    """The package names of pip requirements text (lines that do not parse: none)."""
    names = set()
    for line in (requirements or "").splitlines():
        try:
            names.add(Requirement(line.split("#")[0].strip()).name)
        except InvalidRequirement:
            continue
    return names


async def offer_drift(client: Any, image: str, names: Iterable[str] | None = None,
                      exclude: Iterable[str] = (), timeout: float = 10) -> list[str]:
    """launch_warnings for `image` as the provider's live status declares it; a provider
    that cannot say: none (the launch itself has succeeded)."""
    try:
        status = await asyncio.wait_for(client.status(), timeout)
    except Exception:
        return []
    images = status.get("images") if isinstance(status, dict) else None
    declared = next((i.get("packages") for i in images or []
                     if isinstance(i, dict) and i.get("name") == image), None)
    return launch_warnings(image, declared, names, exclude)


def _with_distributions(modules: Iterable[str]) -> set[str]:
    import importlib.metadata as md  # noqa: PLC0415  (only at launch)

    try:
        dists = md.packages_distributions()
    except Exception:
        dists = {}
    out = set(modules)
    for m in list(out):
        out.update(dists.get(m, []))
    return out


def imported_packages(modules: Iterable[str] | None = None) -> set[str]:
    """Top-level third-party modules imported in this process (what a notebook's kernel has
    imported so far): a cheap stand-in for "what the notebook imports"."""
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    mods = list(sys.modules) if modules is None else list(modules)
    return {m.split(".")[0] for m in mods
            if m.split(".")[0] not in stdlib and not m.startswith("_")
            and m.split(".")[0] not in _SKIP and NAME.match(m.split(".")[0])}
