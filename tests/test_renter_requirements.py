"""Requirements at launch, the renter's side (issue #15, contract C4): a requirements file or
text, or "what this notebook imports, at my local versions", passed through the /walnut REST
API, `%walnut launch` and `walnut job` to the provider, which installs them before it hands
the kernel over; the launch shows the install live and a failure with pip's error text and a
full refund. Bad input is refused before anything is launched or paid.

Against the default stack (tests/stack.py: Docker sessions, TLS with a pinned certificate)
and the renter's real Jupyter Server.
"""

from __future__ import annotations

import json
from importlib import metadata

import pytest
from conftest import provider_config
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

@pytest.fixture
def node(tmp_path, ledger):
    config = provider_config(
        provider={"name": "req-node", "runtime": stack_runtime()},
        settlement={"settle_after_s": 1, "min_challenge_period_s": 60},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 1024,
                 "price_per_second_mist": PRICE}])
    started = StackNode(tmp_path / "provider", ledger, config=config)
    yield started
    started.stop()


@pytest.fixture
def jp_server_config(node, tmp_path, ledger, jp_root_dir):
    (jp_root_dir / "analysis.ipynb").write_text(json.dumps(notebook("import numpy")))
    (jp_root_dir / "not-a-notebook.ipynb").write_text("{ no json")
    (tmp_path / "outside.ipynb").write_text(json.dumps(notebook("import numpy")))
    return renter_server_config(tmp_path / "renter", ledger.path, [node.pinned_url])


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
    assert node.node.store.list() == []  # the provider was never asked


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
    assert main(["job", "list"]) == 0
    assert "0 job(s)" in capsys.readouterr().out
