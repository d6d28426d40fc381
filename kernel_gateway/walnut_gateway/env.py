"""The session's own writable Python environment, layered over the image's.

The image's environment (/opt/walnut in a container, the provider's own in the process
runtime) is read-only. At start the gateway makes a venv in the session's workspace
(`$HOME/.walnut/env`, so it is per session and goes with the workspace) whose site-packages
has a .pth that adds the image's site-packages AFTER its own: base packages stay importable
and whatever the renter installs shadows them (pip then says "Not uninstalling X ... outside
environment" instead of failing on the read-only base). The gateway re-executes itself with
that venv's python, so jupyter_client starts kernels with it (a kernelspec's "python" argv[0]
becomes sys.executable): `%pip`, `!pip`, `python -m pip` and a terminal's `pip` all install
there. The image needs no change: everything is made from the running interpreter.
"""

from __future__ import annotations

import os
import shlex
import site
import sys
import sysconfig
import venv
from pathlib import Path

ENV_VAR = "WALNUT_SESSION_ENV"
BASE_PTH = "zz_walnut_image.pth"  # after editable installs' .pth files: theirs come first
# pip settings the provider gives sessions; every other PIP_* of the host is dropped
PROVIDER_PIP = ("PIP_INDEX_URL", "PIP_TRUSTED_HOST")
# what kernels see of the gateway's environment, besides PATH
KERNEL_VARS = (*PROVIDER_PIP, "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_CONFIG_FILE",
               "WALNUT_PACKAGE_INDEX",
               "WALNUT_EGRESS", ENV_VAR, "VIRTUAL_ENV")
IPYTHON_CONFIG = """\
# Written by walnut_gateway at every start: the session's %pip and %conda magics.
c.InteractiveShellApp.extensions.append("walnut_gateway.magics")
"""


def session_env_dir(home: str | None = None) -> Path:
    return Path(home or os.environ.get("HOME") or ".") / ".walnut" / "env"


def in_env(env_dir: Path) -> bool:
    return Path(sys.prefix).resolve() == env_dir.resolve()


def base_site_packages() -> list[str]:
    """The running interpreter's package directories, in import order."""
    paths = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    for p in site.getsitepackages():
        if p not in paths:
            paths.append(p)
    return [p for p in paths if os.path.isdir(p)]


def _env_site_packages(env_dir: Path) -> Path:
    scheme = sysconfig.get_paths(vars={"base": str(env_dir), "platbase": str(env_dir)},
                                 scheme="venv")
    return Path(scheme["purelib"])


def _home_of(cfg: Path) -> str | None:
    try:
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return value.strip()
    except OSError:
        return None
    return None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def ensure(env_dir: Path, base_sites: list[str]) -> Path:
    """Make (or reuse, on a restart of the session) the session env; returns its python."""
    python = env_dir / "bin" / "python"
    interpreter_home = os.path.dirname(getattr(sys, "_base_executable", sys.executable))
    if not (python.exists() and _home_of(env_dir / "pyvenv.cfg") == interpreter_home):
        # absent, or made by another interpreter (the image changed): start it afresh
        venv.EnvBuilder(with_pip=False, symlinks=True, clear=env_dir.exists()).create(env_dir)
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in base_sites)
    _write(_env_site_packages(env_dir) / BASE_PTH,
           "# the image's packages, after this session's own (written by walnut_gateway)\n"
           + lines)
    bindir = env_dir / "bin"
    py = shlex.quote(str(python))
    for name in ("pip", "pip3", f"pip{sys.version_info[0]}.{sys.version_info[1]}"):
        _write(bindir / name, f'#!/bin/sh\nexec {py} -m walnut_gateway.pipwrap "$@"\n', 0o755)
    for name in ("conda", "mamba", "micromamba"):
        _write(bindir / name, f'#!/bin/sh\nexec {py} -m walnut_gateway.pipwrap --conda "$@"\n',
               0o755)
    _write(env_dir / "etc" / "ipython" / "ipython_kernel_config.py", IPYTHON_CONFIG)
    return python


def session_environ(environ: dict[str, str], env_dir: Path) -> dict[str, str]:
    """The gateway's environment inside the session env, without the host's pip settings."""
    out = {k: v for k, v in environ.items()
           if not k.startswith("PIP_") or k in PROVIDER_PIP}
    out[ENV_VAR] = str(env_dir)
    out["VIRTUAL_ENV"] = str(env_dir)
    out["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"  # no call home on every install
    # the host's pip.conf files (extra indexes, find-links to host paths) are no session's
    out["PIP_CONFIG_FILE"] = os.devnull
    bindir = str(env_dir / "bin")
    rest = [p for p in environ.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    out["PATH"] = os.pathsep.join([bindir, *rest])
    out.pop("PYTHONHOME", None)
    return out


def enter() -> None:
    """Re-execute this gateway under the session env's python; returns when already in it."""
    env_dir = session_env_dir()
    if in_env(env_dir):
        os.environ.update(session_environ(dict(os.environ), env_dir))
        return
    python = ensure(env_dir, base_site_packages())
    os.execve(str(python), [str(python), "-m", "walnut_gateway"],
              session_environ(dict(os.environ), env_dir))
