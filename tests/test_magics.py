"""`%walnut` magics in a real IPython shell (and a real ipykernel) against real providers."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest
from conftest import FUNDS, ThreadedProvider
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

pytestmark = pytest.mark.timeout(240)


def funded_home(path, ledger):
    """A renter home whose wallet holds FUNDS on the shared test ledger."""
    from jupyter_walnut.common.keys import KeyPair

    path.mkdir(parents=True, exist_ok=True)
    key = KeyPair.generate()
    key.save(path / "wallet.key")
    ledger.fund(key.address, FUNDS)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch, ledger):
    import jupyter_walnut.renter.manager as manager

    monkeypatch.setenv("WALNUT_HOME", str(tmp_path / "renter"))
    monkeypatch.setenv("WALNUT_LEDGER", str(tmp_path / "ledger.sqlite"))  # the providers' too
    monkeypatch.setattr(manager, "_current", None)  # a fresh renter for this home
    monkeypatch.chdir(tmp_path)  # ended sessions' walnut-results/ land here, not in the repo
    return funded_home(tmp_path / "renter", ledger)


@pytest.fixture
def shell(home, threaded_provider, monkeypatch):
    monkeypatch.setenv("WALNUT_PROVIDERS", threaded_provider.url)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_walnut")
    yield ip
    ip.run_line_magic("walnut", "stop --all")
    ip.run_line_magic("unload_ext", "jupyter_walnut")
    ip.user_ns.clear()


def run(ip, cell: str):
    with capture_output() as cap:
        result = ip.run_cell(cell)
    return result, cap


def test_help_and_errors_are_one_line(shell):
    _, cap = run(shell, "%walnut help")
    assert "%%walnut run" in cap.stdout and "%walnut job submit" in cap.stdout
    result, cap = run(shell, "%walnut frobnicate")
    assert not result.success
    assert "unknown command 'frobnicate'" in cap.stderr
    assert "Traceback" not in cap.stdout + cap.stderr
    _, cap = run(shell, "%walnut launch --budget lots")
    assert "invalid int value: 'lots'" in cap.stderr
    _, cap = run(shell, "%walnut launch --help")
    assert "--budget MIST" in cap.stdout
    _, cap = run(shell, "%walnut stop s-0000000000000000")
    assert "no session 's-0000000000000000'" in cap.stderr
    assert "Traceback" not in cap.stdout + cap.stderr
    result, cap = run(shell, "%walnut run")
    assert "cell magic" in cap.stderr


def test_providers_table_text_and_html(shell, threaded_provider):
    table = shell.run_line_magic("walnut", "providers")
    text = repr(table)
    assert "cpu-small" in text and "gpu-1" in text and "test-node" in text
    assert "1,000" in text  # MIST per second of cpu-small
    assert "<table>" in table._repr_html_() and "cpu-small" in table._repr_html_()
    cheap = shell.run_line_magic("walnut", "providers --max-price 2000")
    assert "gpu-1" not in repr(cheap) and "1 offer(s)" in repr(cheap)


def test_run_cell_push_pull_outputs_and_errors(shell, threaded_provider):
    import numpy as np

    _, cap = run(shell, "%walnut launch --offer 'cpu-small' --budget 600000")
    assert "running on test-node" in cap.stderr + cap.stdout
    sessions = repr(shell.run_line_magic("walnut", "sessions"))
    assert "cpu-small" in sessions and "running" in sessions

    shell.user_ns.update(n=42, x=2.5, d={"a": [1, 2, {"b": None}], "t": (1, "z")},
                         arr=np.arange(12, dtype=np.float32).reshape(3, 4), s="héllo")
    result, cap = run(shell, "%%walnut run --push n,x,d,arr,s --pull out,arr2,info\n"
                             "import os, numpy as np\n"
                             "print('remote pid', os.getpid())\n"
                             "out = {'n': n * 2, 'x': x + 1, 'd': d, 's': s.upper()}\n"
                             "arr2 = arr.T @ arr\n"
                             "arr2[0, 0] = -1\n"
                             "info = os.environ.get('WALNUT_SESSION_ID')\n")
    assert result.success, cap.stderr
    assert "remote pid" in cap.stdout
    ns = shell.user_ns
    assert ns["out"] == {"n": 84, "x": 3.5, "d": {"a": [1, 2, {"b": None}], "t": (1, "z")},
                         "s": "HÉLLO"}
    arr = ns["arr"]
    expected = arr.T @ arr
    expected[0, 0] = -1
    np.testing.assert_array_equal(ns["arr2"], expected)
    ns["arr2"][1, 1] = 7  # pulled arrays are ordinary writable arrays
    assert ns["info"].startswith("s-")  # it really ran in the session

    # state stays on the remote kernel between cells; rich displays come back as displays
    result, cap = run(shell, "%%walnut run\n"
                             "from IPython.display import display\n"
                             "display({'image/png': 'iVBORw0KGgo=', 'text/plain': 'img'}, "
                             "raw=True)\n"
                             "import sys; print('to stderr', file=sys.stderr)\n"
                             "out['n'] + 1")
    assert result.success
    datas = [o.data for o in cap.outputs]
    assert any(d.get("image/png") == "iVBORw0KGgo=" for d in datas)
    assert any(d.get("text/plain") == "85" for d in datas)
    assert "to stderr" in cap.stderr

    # a remote error: its own name and the remote traceback, no local frames
    result, cap = run(shell, "%%walnut run\ndef f():\n    return 1 / 0\nf()")
    assert not result.success
    assert type(result.error_in_exec).__name__ == "ZeroDivisionError"
    shown = re.sub(r"\x1b\[[0-9;]*m", "", cap.stdout + cap.stderr)
    assert "ZeroDivisionError" in shown and "return 1 / 0" in shown
    assert "magics.py" not in shown

    # what cannot move gets a clear one-line error
    shell.user_ns["lock"] = __import__("threading").Lock()
    result, cap = run(shell, "%%walnut run --push lock\npass")
    assert not result.success and "cannot push 'lock'" in cap.stderr
    assert "Traceback" not in cap.stdout + cap.stderr
    result, cap = run(shell, "%%walnut run --pull nothing_here\npass")
    assert "cannot pull 'nothing_here'" in cap.stderr
    assert "not defined on the remote kernel" in cap.stderr
    result, cap = run(shell, "%%walnut run --push undefined_var\npass")
    assert "not defined here" in cap.stderr


def test_pandas_and_functions_round_trip(shell):
    pd = pytest.importorskip("pandas")
    run(shell, "%walnut launch --budget 600000")
    shell.user_ns["df"] = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    result, cap = run(shell, "def double(v):\n    return v * 2\n")
    result, cap = run(shell, "%%walnut run --push df,double --pull df2\n"
                             "df2 = df.assign(c=df.a.map(double))\n")
    assert result.success, cap.stderr
    assert shell.user_ns["df2"]["c"].tolist() == [2, 4, 6]


def test_size_limit(shell):
    import numpy as np

    run(shell, "%walnut launch --budget 600000")
    shell.run_line_magic("config", "WalnutMagics.max_transfer_mb = 1")
    shell.user_ns["big"] = np.zeros(2_000_000, dtype=np.uint8)
    try:
        result, cap = run(shell, "%%walnut run --push big\npass")
        assert not result.success
        assert "cannot push 'big': 2.0 MB is over the 1 MB transfer limit" in cap.stderr
    finally:
        shell.run_line_magic("config", "WalnutMagics.max_transfer_mb = 200")


def test_magics_inside_a_real_ipykernel(home, tmp_path, ledger):
    """In ipykernel the kernel's own loop runs: the magic must still work and its remote
    outputs must reach the cell's iopub."""
    provider = ThreadedProvider(tmp_path / "p", ledger)
    km = kc = None
    try:
        env = {**os.environ, "WALNUT_HOME": str(home), "WALNUT_PROVIDERS": provider.url}
        km, kc = _start_kernel(env)
        outputs: list[dict] = []

        def execute(code: str) -> dict:
            reply = kc.execute_interactive(code, timeout=120, output_hook=outputs.append)
            return reply["content"]

        assert execute("%load_ext jupyter_walnut")["status"] == "ok"
        assert execute("%walnut launch --budget 600000")["status"] == "ok"
        reply = execute("%%walnut run\nprint('hello from', 'remote')\n6 * 7")
        assert reply["status"] == "ok"
        texts = [m["content"].get("text", "") for m in outputs
                 if m["header"]["msg_type"] == "stream"]
        assert any("hello from remote" in t for t in texts)
        results = [m["content"]["data"].get("text/plain") for m in outputs
                   if m["header"]["msg_type"] in ("display_data", "execute_result")]
        assert "42" in results
        # progress of the launch was shown as an updatable display
        assert any(m["header"]["msg_type"] == "display_data" and
                   "running on test-node" in json.dumps(m["content"]) or
                   m["header"]["msg_type"] == "update_display_data" and
                   "running on test-node" in json.dumps(m["content"]) for m in outputs)
        reply = execute("%%walnut run\nraise ValueError('bad remote value')")
        assert reply["status"] == "error" and reply["ename"] == "ValueError"
        assert execute("%walnut stop --all")["status"] == "ok"
    finally:
        if kc is not None:
            kc.stop_channels()
        if km is not None:
            km.shutdown_kernel(now=True)
        provider.stop()


def _start_kernel(env: dict):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.kernel_cmd = None
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    deadline = time.monotonic() + 60
    while True:
        try:
            kc.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
    return km, kc


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))


def test_job_and_sweep_magics(shell, tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(
                    "import json\njson.dump({'score': x * 10}, open('outputs/metrics.json', 'w'))"
                    "\nprint('x is', x)")]
    path = tmp_path / "p.ipynb"
    nbformat.write(nb, path)
    table = shell.run_line_magic("walnut", f"job submit {path} --budget 600000 --param x=3 "
                                           "--wait")
    text = repr(table)
    assert "succeeded" in text and '"score": 30' in text and "verified" in text
    job_id = text.split("job ")[1].split()[0]
    assert job_id in repr(shell.run_line_magic("walnut", "job list"))
    files = repr(shell.run_line_magic("walnut", f"job results {job_id}"))
    assert "outputs/metrics.json" in files and "executed.ipynb" in files
    _, cap = run(shell, "%walnut job status job-000000000000")
    assert "no job 'job-000000000000'" in cap.stderr

    sweep = shell.run_line_magic("walnut", f"sweep {path} --grid x=1,2 --budget 1200000 "
                                           "--concurrency 2 --metric score --maximize")
    text = repr(sweep)
    assert "2 run(s); best score: 20" in text and "<- best" in text


def test_away_magic_states_its_trust_bound_and_the_provider_holds_no_more(shell,
                                                                          threaded_provider):
    run(shell, "%walnut launch --offer 'cpu-small' --budget 600000")
    (rec,) = threaded_provider.store.list(statuses=("running",))
    _, cap = run(shell, "%walnut away 60000 --hours 2")
    assert "runs on while you are away, for 2 h" in cap.stdout
    assert "can claim at most 0.00006 SUI beyond what you have already paid" in cap.stdout
    held = threaded_provider.store.get(rec.id)
    assert 0 < held.away_top_mist <= held.voucher_mist + 60_000 and held.away_until

    result, cap = run(shell, "%walnut away lots")  # one line, nothing changed
    assert not result.success and "budget_mist" in cap.stderr and "Traceback" not in cap.stderr
    assert threaded_provider.store.get(rec.id).away_top_mist == held.away_top_mist

    _, cap = run(shell, "%walnut away off")
    assert "away mode off" in cap.stdout
    assert threaded_provider.store.get(rec.id).away_top_mist == 0
