"""Installs in a session: `%pip` / `!pip` go into the session's own writable environment.

Real provider nodes (the default stack: Docker + pinned TLS; and the process runtime) run
sessions; a renter's cells upload a small wheel the test writes here (no package index
needed), install it and import it in the same kernel. A second session does not see it, the
image's packages stay importable and unchanged, `%conda` says what to do instead, and under
`egress = "offline"` pip's failure comes with one message that says why.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from conftest import docker_or_skip, provider_config
from stack import StackNode, launch_kernel, renter_server_config
from test_container_breakout import Session
from walnut_gateway import env as session_env
from walnut_gateway import pipwrap

pytestmark = [pytest.mark.timeout(600)]

PRICE = 1
PACKAGE = "walnut_h2_probe"


def make_wheel(name: str, version: str, module: str, body: str) -> tuple[str, bytes]:
    """A pure-Python wheel of one module, built by hand: (file name, bytes)."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{module}/__init__.py": body,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": ("Wheel-Version: 1.0\nGenerator: walnut-test\n"
                                    "Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return f"{dist}-py3-none-any.whl", buf.getvalue()


def upload(session: Session, filename: str, data: bytes) -> None:
    code = (f"import base64; open({filename!r}, 'wb').write(base64.b64decode("
            f"{base64.b64encode(data).decode()!r}))")
    result = session.execute(code)
    assert result.status == "ok", result.error


def output(result) -> str:
    return result.stdout + result.stderr


ENV_PROBE = r"""
import json, os, sys, numpy
print(json.dumps({"prefix": sys.prefix, "env": os.environ.get("WALNUT_SESSION_ENV"),
                  "numpy": numpy.__file__, "path": os.environ.get("PATH", "").split(":")[0],
                  "pip_vars": sorted(k for k in os.environ if k.startswith("PIP_")),
                  "pip_config_file": os.environ.get("PIP_CONFIG_FILE")}))
"""


# --- nodes and sessions ----------------------------------------------------------------------


def _stack(tmp_path_factory, runtime: str, **config):
    from jupyter_walnut.ledger import LocalLedger

    if runtime == "docker":
        docker_or_skip()
    tmp = tmp_path_factory.mktemp(f"env-{runtime}")
    cfg = provider_config(
        provider={"name": f"env-{runtime}", "runtime": runtime},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 768,
                 "price_per_second_mist": PRICE}],
        settlement={"grace_s": 3600},  # no vouchers here: keep sessions up
        **config)
    ledger = LocalLedger(tmp / "ledger.sqlite")
    return StackNode(tmp / "provider", ledger, config=cfg, runtime=runtime, tls=True), ledger


@pytest.fixture(scope="module", params=["docker", "process"])
def node(request, tmp_path_factory):
    stack, ledger = _stack(tmp_path_factory, request.param)
    try:
        yield stack
    finally:
        stack.stop()
        ledger.close()


@pytest.fixture(scope="module")
def alice(node) -> Session:
    return Session(node)


@pytest.fixture(scope="module")
def bob(node) -> Session:
    return Session(node)


def base_site(node) -> Path | None:
    """The image's site-packages as the host sees it (process runtime), else None."""
    if node.runtime_name != "process":
        return None
    return Path(next(p for p in session_env.base_site_packages() if "site-packages" in p))


# --- tests -------------------------------------------------------------------------------------


def test_kernel_runs_in_the_session_env(alice):
    probe = json.loads(alice.execute(ENV_PROBE).stdout.strip().splitlines()[-1])
    assert probe["prefix"] == probe["env"], probe
    assert probe["env"].endswith("/.walnut/env"), probe
    assert probe["path"] == probe["env"] + "/bin", probe  # `!pip` and terminals find its pip
    assert not probe["numpy"].startswith(probe["env"]), probe  # the image's numpy
    # the host's PIP_FIND_LINKS and friends do not reach the session
    assert set(probe["pip_vars"]) <= {"PIP_INDEX_URL", "PIP_TRUSTED_HOST",
                                      "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_CONFIG_FILE"}, probe
    # nor do the host's pip.conf files (extra indexes, find-links to host paths)
    assert probe["pip_config_file"] == os.devnull, probe


def test_percent_pip_installs_and_imports_at_once(node, alice):
    name, data = make_wheel(PACKAGE, "1.0", PACKAGE, "VALUE = 'one'\n")
    upload(alice, name, data)
    result = alice.execute(f"%pip install --no-index ./{name}", timeout=180)
    assert result.status == "ok", (result.error, output(result))
    assert f"Successfully installed {PACKAGE.replace('_', '-')}-1.0" in output(result), \
        output(result)
    # the same kernel, no restart
    probe = alice.execute(f"import os, {PACKAGE}; print({PACKAGE}.VALUE, "
                          f"{PACKAGE}.__file__.startswith(os.environ['WALNUT_SESSION_ENV']))")
    assert probe.status == "ok", (probe.error, output(probe))
    assert probe.stdout.split() == ["one", "True"], output(probe)
    site = base_site(node)
    if site is not None:  # the image's environment did not change
        assert not (site / PACKAGE).exists()


def test_bang_pip_shadows_a_base_package(node, alice):
    # nvidia-ml-py (module pynvml) is in the image; the session's install shadows it
    name, data = make_wheel("nvidia-ml-py", "999.0", "pynvml", "SHADOW = 'session'\n")
    upload(alice, name, data)
    result = alice.execute(f"!pip install --no-index ./{name}", timeout=180)
    assert result.status == "ok", (result.error, output(result))
    assert "Successfully installed nvidia-ml-py-999.0" in output(result), output(result)
    assert "Not uninstalling nvidia-ml-py" in output(result), output(result)  # base untouched
    probe = alice.execute("import pynvml; print(pynvml.SHADOW)")
    assert probe.stdout.strip() == "session", output(probe)
    # a new process of the session sees it too; the base copy is still where it was
    probe = alice.execute("!python -c 'import pynvml, numpy; print(pynvml.SHADOW)'")
    assert probe.stdout.strip() == "session", output(probe)
    site = base_site(node)
    if site is not None:
        assert (site / "pynvml.py").exists() or (site / "pynvml").exists()


def test_another_session_does_not_see_it(alice, bob):
    assert alice.execute(f"import {PACKAGE}").status == "ok"
    result = bob.execute(f"import {PACKAGE}")
    assert result.status == "error" and result.error["ename"] == "ModuleNotFoundError", \
        result.error
    probe = bob.execute("import numpy, pynvml; print(hasattr(pynvml, 'SHADOW'))")
    assert probe.stdout.strip() == "False", output(probe)


@pytest.mark.parametrize("line", ["%conda install -y numpy", "!conda install numpy",
                                  "%mamba install numpy"])
def test_conda_says_to_use_pip(alice, line):
    result = alice.execute(line)
    assert "Walnut sessions have no conda" in output(result), output(result)
    assert "%pip install" in output(result), output(result)


def test_the_env_goes_with_the_session(node):
    carol = Session(node)
    env = json.loads(carol.execute(ENV_PROBE).stdout.strip().splitlines()[-1])["env"]
    carol.stop()
    if node.runtime_name == "process":
        assert not Path(env).exists()
        assert not (node.state_dir / "sessions" / carol.id).exists()
    else:
        import docker.errors

        from jupyter_walnut.provider.runtimes.docker import resource_name

        with pytest.raises(docker.errors.NotFound):
            node.docker.volumes.get(resource_name(carol.id))
    assert env.endswith("/.walnut/env")


# --- through the renter's Jupyter Server (kernels started with an env whitelist) ----------


@pytest.fixture
def jp_server_config(threaded_provider, tmp_path, ledger):
    return renter_server_config(tmp_path / "renter", ledger.path, [threaded_provider.url])


async def test_pip_through_the_renters_jupyter_server(jp_fetch, jp_ws_fetch, threaded_provider):
    # the server's gateway client sends `env`: the kernel gets only the whitelisted variables
    _, _, ws = await launch_kernel(jp_fetch, jp_ws_fetch, threaded_provider.url, 600_000)
    name, data = make_wheel(PACKAGE, "3.0", PACKAGE, "VALUE = 'three'\n")
    code = (f"import base64; open({name!r}, 'wb').write(base64.b64decode("
            f"{base64.b64encode(data).decode()!r}))")
    assert (await ws.execute(code)).status == "ok"
    result = await ws.execute(f"%pip install --no-index ./{name}", timeout=180)
    assert f"Successfully installed {PACKAGE.replace('_', '-')}-3.0" in output(result), \
        output(result)
    probe = await ws.execute(f"import os, sys, {PACKAGE}; print({PACKAGE}.VALUE, "
                             "sys.prefix == os.environ['WALNUT_SESSION_ENV'])")
    assert probe.stdout.split() == ["three", "True"], output(probe)


# --- offline egress ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_node(tmp_path_factory):
    # no package cache: nothing at all to download from
    stack, ledger = _stack(tmp_path_factory, "docker", network={"egress": "offline"},
                           packages={"cache": "off"})
    try:
        yield stack
    finally:
        stack.stop()
        ledger.close()


@pytest.mark.docker
def test_offline_egress_explains_why_pip_fails(offline_node):
    dave = Session(offline_node)
    try:
        result = dave.execute("%pip install walnut-h2-not-anywhere", timeout=240)
        text = output(result)
        assert "egress policy is `offline`" in text, text
        assert "requirements at launch" in text and "cannot download" in text, text
        assert "Successfully installed" not in text and "restart" not in text, text
        # an upload still installs without any network
        name, data = make_wheel(PACKAGE, "2.0", PACKAGE, "VALUE = 'two'\n")
        upload(dave, name, data)
        result = dave.execute(f"%pip install --no-index ./{name}", timeout=180)
        assert "egress policy" not in output(result), output(result)
        assert dave.execute(f"import {PACKAGE}; print({PACKAGE}.VALUE)").stdout.strip() == "two"
    finally:
        dave.stop()


# --- the env itself, without a session ---------------------------------------------------------


def test_a_restarted_gateway_reuses_the_env(tmp_path):
    env_dir = tmp_path / ".walnut" / "env"
    python = session_env.ensure(env_dir, session_env.base_site_packages())
    marker = session_env._env_site_packages(env_dir) / "installed_by_renter.py"
    marker.write_text("X = 1\n")
    assert session_env.ensure(env_dir, session_env.base_site_packages()) == python
    assert marker.exists()  # what the renter installed survives a restart of the container
    environ = session_env.session_environ(
        {"PATH": "/usr/bin", "PIP_FIND_LINKS": "/opt/wheels", "PIP_INDEX_URL": "http://x/"},
        env_dir)
    assert "PIP_FIND_LINKS" not in environ and environ["PIP_INDEX_URL"] == "http://x/"
    assert environ["PATH"].split(os.pathsep)[0] == str(env_dir / "bin")


def test_the_offline_message_names_the_cache_when_there_is_one():
    assert "cannot download" in pipwrap.offline_message({"WALNUT_EGRESS": "offline"})
    assert "package cache ($PIP_INDEX_URL)" in pipwrap.offline_message(
        {"WALNUT_EGRESS": "offline", "PIP_INDEX_URL": "http://cache/"})
    assert pipwrap.needs_network(["install", "x"])
    assert not pipwrap.needs_network(["install", "--no-index", "./x.whl"])
    assert not pipwrap.needs_network(["list"])
