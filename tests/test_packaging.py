"""The wheel users install: built from this repository, installed into a clean virtualenv.

Builds once per test session (`python -m build --wheel`; the hatch jupyter-builder hook
builds the labextension with jlpm when it is not built yet), installs the wheel and
JupyterLab into a fresh venv with dependencies from the package index, then checks what a
user sees: the server extension and the labextension are enabled and OK, both commands run,
and the `walnut` kernel provisioner is registered. That install is a renter's; the
provider's own dependencies come with the `provider` extra, in a second virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent

# what only `walnut-provider` needs: the `provider` extra, never a renter's base install
PROVIDER_ONLY = {"docker", "nvidia-ml-py", "jupyter-kernel-gateway", "prometheus-client",
                 "psutil", "nbclient", "numpy"}
# what the renter's processes must never load (psutil and prometheus_client come with
# jupyter_server and ipykernel anyway, so only these are checked)
PROVIDER_MODULES = ("docker", "pynvml", "kernel_gateway")
RENTER_MODULES = ("jupyter_walnut", "jupyter_walnut.renter.extension.app",
                  "jupyter_walnut.renter.magics", "jupyter_walnut.renter.cli",
                  "jupyter_walnut.renter.kernel.provisioner")
# imports the renter's entry points as Jupyter, IPython and the `walnut` script do, then
# prints which provider modules are loaded and which are installed at all
RENTER_IMPORTS = f"""
import importlib, importlib.util, json, sys
for name in {RENTER_MODULES!r}:
    importlib.import_module(name)
import jupyter_walnut
jupyter_walnut._jupyter_server_extension_points()
print(json.dumps({{"loaded": sorted(m for m in {PROVIDER_MODULES!r} if m in sys.modules),
                  "installed": sorted(m for m in {PROVIDER_MODULES!r}
                                      if importlib.util.find_spec(m) is not None)}}))
"""


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


def make_env(tmp_path_factory, *requirements: str) -> dict:
    """A new virtualenv (no system site-packages) with `requirements` installed."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=True, clear=True)
    bin_dir = root / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", *requirements], timeout=900)
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "WALNUT_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               VIRTUAL_ENV=str(root))
    return {"bin": bin_dir, "env": env, "root": root}


@pytest.fixture(scope="session")
def clean_env(wheel, tmp_path_factory) -> dict:
    """A renter's install: the wheel and JupyterLab, no extras."""
    return make_env(tmp_path_factory, f"{wheel}", "jupyterlab>=4.2,<5")


@pytest.fixture(scope="session")
def provider_env(wheel, tmp_path_factory) -> dict:
    """A provider's install: the wheel with the `provider` extra."""
    return make_env(tmp_path_factory, f"{wheel}[provider]")


def in_env(clean_env: dict, *cmd: str, check: bool = True) -> str:
    """stdout + stderr of a command run in the clean venv, without colour codes; with
    check=False the command must fail."""
    done = subprocess.run([str(clean_env["bin"] / cmd[0]), *cmd[1:]], env=clean_env["env"],
                          cwd=clean_env["root"], timeout=120, capture_output=True, text=True)
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    assert (done.returncode == 0) == check, f"{cmd} exited {done.returncode}:\n{text[-3000:]}"
    return text


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


def test_commands_run(clean_env, provider_env):
    provider = in_env(provider_env, "walnut-provider", "--help")
    assert "init" in provider and "serve" in provider and "status" in provider
    walnut = in_env(clean_env, "walnut", "--help")
    assert "wallet" in walnut
    wallet = in_env(clean_env, "walnut", "wallet", "--help")
    assert "balance" in wallet


def test_walnut_kernel_provisioner_is_registered(clean_env):
    code = ("from jupyter_client.provisioning import KernelProvisionerFactory as F\n"
            "f = F.instance()\n"
            "print(sorted(f.get_provisioner_entries()))\n"
            "print(f._get_provisioner('walnut').load().__name__)\n"
            "print(f._get_provisioner('walnut-picker').load().__name__)")
    out = in_env(clean_env, "python", "-c", code)
    assert "'walnut'" in out and "WalnutProvisioner" in out, out
    assert "'walnut-picker'" in out and "WalnutPickerProvisioner" in out, out


def requires_dist(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        headers = Parser().parsestr(whl.read(meta).decode())
    return [Requirement(r) for r in headers.get_all("Requires-Dist")]


def test_provider_only_packages_are_the_provider_extra(wheel):
    reqs = requires_dist(wheel)
    base = {canonicalize_name(r.name) for r in reqs if r.marker is None}
    provider = {canonicalize_name(r.name) for r in reqs
                if r.marker is not None and r.marker.evaluate({"extra": "provider"})}
    assert not PROVIDER_ONLY - provider, PROVIDER_ONLY - provider
    assert not PROVIDER_ONLY & base, PROVIDER_ONLY & base
    assert {"jupyter-server", "jupyterlab", "jupyter-client", "ipykernel"} <= base


def test_renter_install_lacks_the_provider_packages(clean_env):
    """The renter's server extension, magics, provisioner and CLI import without them."""
    out = json.loads(in_env(clean_env, "python", "-c", RENTER_IMPORTS).splitlines()[-1])
    assert out == {"loaded": [], "installed": []}, out


def test_renter_imports_load_no_provider_module_where_they_are_installed():
    """Here (this repository's environment) every provider package is installed: the
    renter's entry points still do not load one."""
    done = run([sys.executable, "-c", RENTER_IMPORTS], timeout=120)
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["installed"] == sorted(PROVIDER_MODULES), out  # else this proves nothing
    assert out["loaded"] == [], out


def test_walnut_provider_without_the_extra_names_it(clean_env):
    text = in_env(clean_env, "walnut-provider", "--help", check=False)
    assert 'pip install "jupyter-walnut[provider]"' in text, text


def test_provider_extra_is_enough_for_a_node(provider_env):
    code = ("import jupyter_walnut.provider.node, jupyter_walnut.provider.runtimes.docker, "
            "walnut_gateway.kernels, pynvml, numpy; print('ok')")
    assert in_env(provider_env, "python", "-c", code).strip().endswith("ok")
