"""Requirements at launch, the renter's side (issue #15, contract C4): a requirements file or
text, or "what this notebook imports, at my local versions", passed through the /walnut REST
API, `%walnut launch` and `walnut job` to the provider, which installs them before it hands
the kernel over; the launch shows the install live and a failure with pip's error text and a
full refund. Bad input is refused before anything is launched or paid.

Against the default stack (tests/stack.py: Docker sessions, TLS with a pinned certificate)
and the renter's real Jupyter Server.
"""

from __future__ import annotations

import asyncio
import json
import time
import zipfile
from importlib import metadata

import pytest
from conftest import provider_config
from kernel_ws import KernelWS
from package_index import PackageIndex, host_wheels
from stack import StackNode, renter_server_config, stack_runtime
from tornado.httpclient import HTTPClientError

from jupyter_walnut.renter.requirements import (
    MAX_REQUIREMENTS_BYTES,
    RequirementsError,
    check_requirements,
    notebook_sources,
    read_requirements_file,
    requirements_from_notebook,
    source_imports,
)

pytestmark = pytest.mark.timeout(300)

PRICE = 1000
BUDGET = 600 * PRICE


def notebook(*cells: str, markdown: str = "import not_code") -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": markdown},
        *({"cell_type": "code", "metadata": {}, "source": c.splitlines(keepends=True),
           "outputs": [], "execution_count": None} for c in cells)]}


# --- what a notebook imports, at the versions installed here --------------------------------

def test_a_notebooks_imports_are_pinned_at_the_local_versions(tmp_path):
    path = tmp_path / "analysis.ipynb"
    path.write_text(json.dumps(notebook(
        "%matplotlib inline\nimport numpy as np, os\nfrom pandas import DataFrame",
        "import sklearn.linear_model\nfiles = !ls\n!pip install thing\nimport jupyter_walnut",
        "%%bash\nimport not_python",  # a cell magic's body is another language
        "from . import local_module\nimport json, sys\ndef f():\n    import scipy.stats",
        "import module_nobody_installed",
        "def broken(:\n    import in_a_cell_that_does_not_parse",
    )))

    text = requirements_from_notebook(path)

    lines = text.splitlines()
    assert lines[:-1] == [f"numpy=={metadata.version('numpy')}",
                          f"pandas=={metadata.version('pandas')}",
                          f"scikit-learn=={metadata.version('scikit-learn')}",  # sklearn's dist
                          f"scipy=={metadata.version('scipy')}"]
    # nothing to pin a module to that is not installed here: named, as a comment pip skips
    assert lines[-1] == "# imported but not installed here: module_nobody_installed"
    assert check_requirements(text) == text


def test_only_code_cells_and_absolute_imports_count():
    nb = notebook("import numpy", markdown="import pandas")
    assert notebook_sources(nb) == ["import numpy"]
    assert source_imports("from .x import y\nfrom os.path import join\nimport a.b.c") == \
        {"os", "a"}
    assert source_imports("x?\nobj.method??\n%time import z") == set()


# --- requirements pip would read as something else are refused ------------------------------

@pytest.mark.parametrize("line,why", [
    ("-r other.txt", "options such as -r"),
    ("--index-url http://elsewhere/simple", "options such as -r"),
    ("-e .", "options such as -r"),
    ("https://example.org/pkg-1.0.whl", "paths and URLs"),
    ("./local_checkout", "paths and URLs"),
    ("/etc/passwd", "paths and URLs"),
    ("pkg @ git+https://example.org/pkg", "paths and URLs"),
    ("dist/thing-1.0-py3-none-any.whl", "paths and URLs"),
    ("pandas ==", "is not a requirement"),
])
def test_a_line_pip_would_misread_is_refused_with_its_number(line, why):
    with pytest.raises(RequirementsError) as caught:
        check_requirements(f"# analysis\nnumpy>=1.20  # arrays\n{line}\n")
    assert caught.value.status == 400
    assert caught.value.message.startswith("requirements line 3 (") and why in \
        caught.value.message
    assert "\n" not in caught.value.message


def test_an_unreadable_or_oversized_file_is_one_line(tmp_path):
    with pytest.raises(RequirementsError, match="cannot read requirements file .*missing"):
        read_requirements_file(tmp_path / "missing.txt")
    big = tmp_path / "big.txt"
    big.write_text("numpy\n" * (MAX_REQUIREMENTS_BYTES // 6 + 1))
    with pytest.raises(RequirementsError, match="larger than 64 KiB"):
        read_requirements_file(big)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RequirementsError, match="not UTF-8"):
        read_requirements_file(binary)


# --- the REST API, the magic and the CLI refuse bad input before anything is paid -----------

@pytest.fixture(scope="module")
def upstream():
    """The node's package cache's upstream: wheels downloaded on the host (tests run offline)."""
    index = PackageIndex(host_wheels())
    yield index
    index.close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    from jupyter_walnut.ledger import LocalLedger

    with LocalLedger(tmp_path_factory.mktemp("ledger") / "ledger.sqlite") as led:
        yield led


@pytest.fixture(scope="module")
def node(tmp_path_factory, ledger, upstream):
    config = provider_config(
        provider={"name": "req-node", "runtime": stack_runtime()},
        settlement={"settle_after_s": 1, "min_challenge_period_s": 60},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 1024,
                 "price_per_second_mist": PRICE}],
        packages={"upstream_url": upstream.url})
    started = StackNode(tmp_path_factory.mktemp("req-node") / "provider", ledger, config=config)
    cache = started.node.package_cache
    assert cache is not None and started.run(cache.wait_ready()), "the node's package cache"
    yield started
    proc = cache.proc if cache is not None else None
    started.stop()
    if proc is not None and proc.poll() is None:  # never leave a devpi behind
        proc.kill()
        proc.wait(10)


@pytest.fixture
def jp_server_config(node, tmp_path, ledger, jp_root_dir):
    (jp_root_dir / "analysis.ipynb").write_text(json.dumps(notebook("import numpy")))
    (jp_root_dir / "not-a-notebook.ipynb").write_text("{ no json")
    (tmp_path / "outside.ipynb").write_text(json.dumps(notebook("import numpy")))
    # the hardware check (issue #9, its own tests) measures the CPU: on a machine shared by
    # parallel test runs it may fail a launch that this file is not about
    return renter_server_config(tmp_path / "renter", ledger.path, [node.pinned_url],
                                RenterManager={"verify_launches": False})


BAD_BODIES = [
    ({"requirements": "-r /etc/secrets.txt"}, "requirements line 1"),
    ({"requirements": "numpy\n" * (MAX_REQUIREMENTS_BYTES // 6 + 1)}, "larger than 64 KiB"),
    ({"requirements": ["numpy"]}, "requirements must be a string"),
    ({"requirements_from_notebook": "missing.ipynb"}, "cannot read notebook"),
    ({"requirements_from_notebook": "not-a-notebook.ipynb"}, "is not a notebook"),
    ({"requirements_from_notebook": "../outside.ipynb"}, "outside the server root"),
    ({"requirements_from_notebook": "/etc/passwd"}, "outside the server root"),
    ({"requirements": "numpy", "requirements_from_notebook": "analysis.ipynb"},
     "not both"),
]


async def test_bad_requirements_are_a_400_and_nothing_is_launched_or_paid(jp_fetch, node):
    wallet = json.loads((await jp_fetch("walnut", "wallet")).body)
    provider_sessions = len(node.node.store.list())
    for extra, message in BAD_BODIES:
        with pytest.raises(HTTPClientError) as caught:
            await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
                {"provider_url": node.pinned_url, "shape": "cpu-small", "budget_mist": BUDGET,
                 **extra}))
        assert caught.value.code == 400, extra
        answer = json.loads(caught.value.response.body)
        assert message in answer["message"], (extra, answer)

    assert json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"] == []
    assert json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"] == \
        wallet["balance_mist"]
    assert len(node.node.store.list()) == provider_sessions  # the provider was never asked


def test_the_magic_and_the_job_cli_refuse_a_bad_file_in_one_line(tmp_path, monkeypatch,
                                                                  capsys):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    from jupyter_walnut.renter import manager
    from jupyter_walnut.renter.cli import main

    monkeypatch.setenv("WALNUT_HOME", str(tmp_path / "renter"))
    monkeypatch.setenv("WALNUT_LEDGER", str(tmp_path / "ledger.sqlite"))
    monkeypatch.setenv("WALNUT_PROVIDERS", "http://127.0.0.1:9")  # never reached
    monkeypatch.setattr(manager, "_current", None)
    bad = tmp_path / "bad.txt"
    bad.write_text("numpy\n--extra-index-url http://elsewhere/simple\n")
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_walnut")
    try:
        for path, message in ((tmp_path / "missing.txt", "cannot read requirements file"),
                              (bad, "requirements line 2")):
            with pytest.raises(UsageError) as caught:
                ip.run_line_magic("walnut", f"launch --requirements {path}")
            assert str(caught.value).startswith("walnut: ") and message in str(caught.value)
            assert "\n" not in str(caught.value)
        with pytest.raises(UsageError, match="not allowed with argument"):
            ip.run_line_magic("walnut", f"launch --requirements {bad} "
                                        "--requirements-from-notebook")
    finally:
        ip.run_line_magic("unload_ext", "jupyter_walnut")
    assert manager.RenterManager.current().store.list() == []

    nb = tmp_path / "job.ipynb"
    nb.write_text(json.dumps(notebook("print(1)")))
    code = main(["job", "submit", str(nb), "--budget", "1000", "--requirements", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "requirements line 2" in err
    code = main(["sweep", str(nb), "--grid", "lr=0.1,0.2", "--budget", "1000",
                 "--requirements", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "requirements line 2" in err
    assert main(["job", "list"]) == 0
    assert "0 job(s)" in capsys.readouterr().out


# --- a real install, through the renter's REST API ---------------------------------------

async def launch(jp_fetch, node, **extra) -> dict:
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": node.pinned_url, "shape": "cpu-small", "budget_mist": BUDGET,
         **extra}), request_timeout=600)
    return json.loads(resp.body)


async def watching(jp_fetch, seen: list[str]) -> None:
    """Collect every distinct detail of the launch's environment step, as the sidebar polls."""
    while True:
        for s in json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"]:
            for step in s["launch"]:
                if step["step"] == "environment" and (not seen or seen[-1] != step["detail"]):
                    seen.append(step["detail"])
        await asyncio.sleep(0.05)  # the sidebar's polling, until cancelled


async def run_in_session(jp_fetch, jp_ws_fetch, session: dict, code: str):
    kernel = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps(
        {"name": session["kernel_name"]}), request_timeout=120)).body)
    ws = KernelWS(await jp_ws_fetch("api", "kernels", kernel["id"], "channels"))
    try:
        return await ws.execute(code, timeout=120)
    finally:
        ws.conn.close()
        await jp_fetch("api", "kernels", kernel["id"], method="DELETE")


@pytest.fixture
def tabulate_here(tmp_path, monkeypatch) -> str:
    """tabulate "installed" for this renter (its wheel unpacked on sys.path), which the
    session images do not have: what a notebook importing it needs, at this version."""
    [wheel] = host_wheels().glob("tabulate-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    monkeypatch.syspath_prepend(str(site))
    return metadata.version("tabulate")


async def test_a_notebooks_imports_are_installed_live_and_a_relaunch_starts_from_cache(
        jp_fetch, jp_ws_fetch, jp_root_dir, node, tabulate_here):
    (jp_root_dir / "tables.ipynb").write_text(json.dumps(notebook(
        "import tabulate\nimport numpy as np", "print(tabulate.tabulate([[1, 2]]))")))
    seen: list[str] = []
    watcher = asyncio.ensure_future(watching(jp_fetch, seen))
    try:
        session = await launch(jp_fetch, node, requirements_from_notebook="tables.ipynb")
    finally:
        watcher.cancel()

    steps = {s["step"]: s for s in session["launch"]}
    assert [s["step"] for s in session["launch"]] == [
        "quote", "open_channel", "create_session", "environment", "await_running",
        "kernelspec"]
    assert all(s["state"] == "done" for s in session["launch"])
    assert "installing the requirements is not billed" in steps["quote"]["detail"]
    assert steps["environment"]["detail"] == "environment ready"
    assert session["environment"]["state"] == "ready"
    # pip's progress reached the renter while it ran, in the provider's words
    assert any(d.startswith(("resolving", "downloading", "installing")) for d in seen), seen
    assert any(" of " in d for d in seen if d.startswith(("downloading", "installing"))), seen
    # the package this notebook imports is installed, at the version the server has
    result = await run_in_session(jp_fetch, jp_ws_fetch, session,
                                  "import tabulate; print(tabulate.__version__)")
    assert result.status == "ok", result.error
    assert result.stdout.strip() == tabulate_here
    await jp_fetch("walnut", "sessions", session["id"], method="DELETE")

    again = await launch(jp_fetch, node, requirements_from_notebook="tables.ipynb")
    steps = {s["step"]: s for s in again["launch"]}
    assert steps["environment"]["detail"] == "environment ready from cache"
    assert again["environment"]["state"] == "cached"
    result = await run_in_session(jp_fetch, jp_ws_fetch, again, "import tabulate")
    assert result.status == "ok", result.error
    await jp_fetch("walnut", "sessions", again["id"], method="DELETE")


async def test_a_bad_requirement_fails_with_pips_message_and_the_deposit_comes_back(
        jp_fetch, node, ledger):
    address = json.loads((await jp_fetch("walnut", "wallet")).body)["address"]
    before = ledger.balance(address)

    with pytest.raises(HTTPClientError) as caught:
        await launch(jp_fetch, node, requirements="tabulate\nnonexistent-package-xyz==1\n")

    assert caught.value.code == 502
    message = json.loads(caught.value.response.body)["message"]
    assert "No matching distribution found for nonexistent-package-xyz==1" in message
    assert "nothing was charged: the deposit comes back in full" in message
    [session] = [s for s in json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"]
                 if s["status"] == "failed" and s["has_requirements"]]
    failed = session["launch"][-1]
    assert (failed["step"], failed["state"]) == ("environment", "failed")
    assert "No matching distribution found" in failed["detail"]
    assert session["reason"].startswith("installing requirements failed: ")
    assert session["environment"]["state"] == "failed"
    assert "kernelspec" not in {s["step"] for s in session["launch"]}

    async def refunded() -> bool:
        await jp_fetch("walnut", "sessions")  # the renter follows the channel meanwhile
        return ledger.balance(address) == before

    for _ in range(600):  # the provider settles, then the ledger holds it all again
        if await refunded():
            break
        await asyncio.sleep(0.1)
    assert ledger.balance(address) == before


# --- %walnut launch --requirements FILE, in a real IPython shell -----------------------------

def test_the_magic_shows_the_install_and_pips_error_whole(tmp_path, monkeypatch, node, ledger):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from jupyter_walnut.common.keys import KeyPair
    from jupyter_walnut.renter import manager

    home = tmp_path / "renter"
    home.mkdir()
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    ledger.fund(key.address, 10**12)
    monkeypatch.setenv("WALNUT_HOME", str(home))
    monkeypatch.setenv("WALNUT_LEDGER", str(ledger.path))
    monkeypatch.setenv("WALNUT_PROVIDERS", node.pinned_url)
    monkeypatch.setattr(manager, "_current", None)
    manager.RenterManager.current().verify_launches = False  # see jp_server_config
    good, bad = tmp_path / "requirements.txt", tmp_path / "bad.txt"
    good.write_text("# what the analysis needs\nnumpy\n")
    bad.write_text("nonexistent-package-xyz==1\n")
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_walnut")
    try:
        with capture_output() as cap:
            ip.run_line_magic("walnut", f"launch --requirements {good} --budget {BUDGET}")
        assert "environment: environment ready" in cap.stderr, cap.stderr
        assert "running on req-node" in cap.stderr
        [session] = manager.RenterManager.current().store.list(statuses=("running",))
        assert session.extra["requirements"] == good.read_text()
        ip.run_line_magic("walnut", "stop --all")
        paid = manager.RenterManager.current().get(session.id).cost_mist

        with capture_output() as cap, pytest.raises(UsageError) as caught:
            ip.run_line_magic("walnut", f"launch --requirements {bad} --budget {BUDGET}")
        # one line for the error, and pip's own text whole above it
        assert "\n" not in str(caught.value)
        assert "installing requirements failed" in str(caught.value)
        assert "ERROR: No matching distribution found for nonexistent-package-xyz==1" in \
            cap.stderr
    finally:
        ip.run_line_magic("unload_ext", "jupyter_walnut")
    # once the provider settled both channels, the wallet paid the session that ran, and
    # not one MIST for the launch whose install failed
    deadline = time.monotonic() + 60
    while ledger.balance(key.address) != 10**12 - paid and time.monotonic() < deadline:
        time.sleep(0.1)  # the node's own settle pass, bounded by the deadline
    assert paid > 0 and ledger.balance(key.address) == 10**12 - paid
