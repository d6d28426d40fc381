"""The wheel users install: built from this repository, installed into a clean virtualenv.

Builds once per test session (`python -m build --wheel`; the hatch jupyter-builder hook
builds the labextension with jlpm when it is not built yet), installs the wheel and
JupyterLab into a fresh venv with dependencies from the package index, then checks what a
user sees: the server extension and the labextension are enabled and OK, both commands run,
and the `walnut` kernel provisioner is registered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        cwd=out)
    (whl,) = out.glob("jupyter_walnut-*.whl")
    return whl


@pytest.fixture(scope="session")
def clean_env(wheel, tmp_path_factory) -> dict:
    """A new virtualenv (no system site-packages) with the wheel and JupyterLab."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=True, clear=True)
    bin_dir = root / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{wheel}", "jupyterlab>=4.2,<5"],
        timeout=900)
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "WALNUT_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               VIRTUAL_ENV=str(root))
    return {"bin": bin_dir, "env": env, "root": root}


def in_env(clean_env: dict, *cmd: str) -> str:
    """stdout + stderr of a command run in the clean venv, without colour codes."""
    done = run([str(clean_env["bin"] / cmd[0]), *cmd[1:]], env=clean_env["env"],
               cwd=clean_env["root"], timeout=120)
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)


def test_wheel_contains_the_labextension_and_the_server_config(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    data = next(n.split("/data/")[0] for n in names if ".data/data/" in n)
    lab = f"{data}/data/share/jupyter/labextensions/jupyter-walnut"
    assert f"{lab}/package.json" in names
    assert any(n.startswith(f"{lab}/static/remoteEntry.") for n in names)
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/jupyter_walnut.json" in names
    assert "walnut_gateway/__init__.py" in names  # the session gateway ships too
    meta = json.loads(zipfile.ZipFile(wheel).read(f"{lab}/package.json"))
    assert meta["name"] == "jupyter-walnut"


def test_server_extension_is_enabled_and_ok(clean_env):
    from jupyter_walnut._version import __version__

    text = in_env(clean_env, "jupyter", "server", "extension", "list")
    lines = [x.strip() for x in text.splitlines()]
    assert "jupyter_walnut enabled" in lines, text
    assert f"jupyter_walnut {__version__} OK" in lines, text  # it imports and loads


def test_labextension_is_enabled_and_ok(clean_env):
    text = in_env(clean_env, "jupyter", "labextension", "list")
    line = next((x for x in text.splitlines() if "jupyter-walnut" in x), "")
    assert "enabled" in line and "OK" in line, text


def test_commands_run(clean_env):
    provider = in_env(clean_env, "walnut-provider", "--help")
    assert "init" in provider and "serve" in provider and "status" in provider
    walnut = in_env(clean_env, "walnut", "--help")
    assert "wallet" in walnut
    wallet = in_env(clean_env, "walnut", "wallet", "--help")
    assert "balance" in wallet


def test_walnut_kernel_provisioner_is_registered(clean_env):
    code = ("from jupyter_client.provisioning import KernelProvisionerFactory as F\n"
            "f = F.instance()\n"
            "print(sorted(f.get_provisioner_entries()))\n"
            "print(f._get_provisioner('walnut').load().__name__)")
    out = in_env(clean_env, "python", "-c", code)
    assert "'walnut'" in out and "WalnutProvisioner" in out, out
