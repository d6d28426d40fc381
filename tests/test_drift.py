"""Version drift: `%%walnut run --push/--pull` warns when the remote kernel's versions of the
packages a pickled value involves differ from the local ones, and the launch warns when the
image's declared versions differ from what the notebook uses. The remote side is a real
kernel of a real session (process runtime); it drifts because the session's own code changes
what its `importlib.metadata` answers, exactly as a differently built image would."""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest
import test_magics
from stack import renter_server_config
from test_magics import run

from jupyter_walnut.renter import drift

home, shell = test_magics.home, test_magics.shell  # fixtures: a funded renter, its shell

pytestmark = pytest.mark.timeout(240)

# run in the remote session: its metadata now says pandas/packaging are other versions
DRIFT_REMOTE = ("%%walnut run\n"
                "import importlib.metadata as _md\n"
                "_real_version = _md.version\n"
                "_md.version = lambda d: {'pandas': '9.9.9', 'packaging': '0.1'}.get("
                "d, None) or _real_version(d)\n")


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if "pickles may not round-trip" in line]


def test_pickled_push_and_pull_warn_of_remote_versions(shell):
    pd = pytest.importorskip("pandas")
    from packaging.version import Version

    local_pandas = md.version("pandas")
    run(shell, "%walnut launch --budget 600000")
    shell.user_ns.update(df=pd.DataFrame({"a": [1, 2]}), v=Version("1.2"), n=3)

    # no drift yet: the same interpreter's packages on both sides, no warning
    result, cap = run(shell, "%%walnut run --push df,n --serializer pickle\npass")
    assert result.success, cap.stderr
    assert warnings_in(cap.stderr) == []

    result, cap = run(shell, DRIFT_REMOTE)
    assert result.success, cap.stderr

    result, cap = run(shell, "%%walnut run --push df,n --serializer pickle\nm = len(df)")
    assert result.success, cap.stderr
    assert warnings_in(cap.stderr) == [
        f"walnut: warning: pandas: local {local_pandas}, remote 9.9.9 — pickles may not "
        "round-trip"]  # numpy is involved too, but its versions agree

    # the data format carries a DataFrame without pickling it: nothing to warn about
    result, cap = run(shell, "%%walnut run --push df\npass")
    assert result.success and warnings_in(cap.stderr) == []
    # ...but a value it cannot carry falls back to a pickle, which does warn
    result, cap = run(shell, "%%walnut run --push v\nassert str(v) == '1.2'")
    assert result.success, cap.stderr
    assert [w.split(": ")[2] for w in warnings_in(cap.stderr)] == ["packaging"]

    # a pickled pull: the remote value's packages
    result, cap = run(shell, "%%walnut run --pull s --serializer pickle\n"
                             "import pandas as pd\ns = pd.Series([1, 2, 3])\n")
    assert result.success, cap.stderr
    assert shell.user_ns["s"].tolist() == [1, 2, 3]
    assert any(w.startswith("walnut: warning: pandas: ") for w in warnings_in(cap.stderr))
    # a data pull never unpickles: no warning
    result, cap = run(shell, "%%walnut run --pull s\ns = pd.Series([4])\n")
    assert result.success and warnings_in(cap.stderr) == []


def test_a_hostile_remote_answer_is_ignored(shell):
    pd = pytest.importorskip("pandas")
    run(shell, "%walnut launch --budget 600000")
    shell.user_ns["df"] = pd.DataFrame({"a": [1]})
    # the remote kernel answers versions that are not versions (markup, megabytes)
    result, cap = run(shell, "%%walnut run\n"
                             "import importlib.metadata as _md\n"
                             "_md.version = lambda d: '<img src=x onerror=alert(1)>' * 1000\n")
    assert result.success
    result, cap = run(shell, "%%walnut run --push df --serializer pickle\nlen(df)")
    assert result.success, cap.stderr
    assert warnings_in(cap.stderr) == [] and "onerror" not in cap.stderr + cap.stdout

    # ...or floods its stdout, repeating every line it prints
    result, cap = run(shell, "%%walnut run\n"
                             "import builtins, sys\n"
                             "_print = builtins.print\n"
                             "def _flood(*a, **k):\n"
                             "    _print(*a, **k); _print(*a, **k)\n"
                             "    sys.stdout.write('{' * 200_000 + '\\n')\n"
                             "builtins.print = _flood\n")
    assert result.success
    result, cap = run(shell, "%%walnut run --push df --serializer pickle\n"
                             "import builtins; builtins.print = _print")
    assert result.success, cap.stderr
    assert warnings_in(cap.stderr) == []


def test_parse_answer_accepts_only_a_flat_bounded_object():
    m = "walnut-versions-0123:"
    assert drift.parse_answer(f"noise\n{m}{json.dumps({'pandas': '2.1.4'})}\n", m) == {
        "pandas": "2.1.4"}
    assert drift.parse_answer(f"{m}" + json.dumps({"a": "1"}) * 2, m) == {}  # not JSON
    assert drift.parse_answer(f"{m}[1, 2]", m) == {}
    assert drift.parse_answer(f"{m}" + "[" * 100_000, m) == {}  # too big to even parse
    assert drift.parse_answer(f"{m}{json.dumps({'x': '1'})}\n{m}{{}}", m) == {}  # two answers
    many = {f"p{i}": "1.0" for i in range(drift.MAX_PACKAGES + 1)}
    assert drift.parse_answer(m + json.dumps(many), m) == {}
    junk = {"pandas": {"nested": "2"}, "numpy": 2, "<b>": "1", "torch": "2.1 <script>",
            "scipy": "1" * 65, "ok": "1.0+cpu"}
    assert drift.parse_answer(m + json.dumps(junk), m) == {"ok": "1.0+cpu"}


def test_what_a_value_involves_and_how_versions_compare():
    pd = pytest.importorskip("pandas")
    assert {"pandas", "numpy"} <= drift.value_packages(pd.DataFrame({"a": [1.0]}))
    assert drift.value_packages({"a": [1, (2, "x")]}) == set()  # plain values: no package
    notebook_function = eval("lambda: 1", {"__name__": "__main__"})
    assert drift.value_packages(notebook_function) == set()  # the notebook's own code
    assert drift.transfer_warnings({"torch": "2.13.0+cpu", "python": "3.11.2"},
                                   {"torch": "2.13.0+cu121", "python": "3.11.9"}) == []
    assert drift.transfer_warnings({"python": "3.11.2"}, {"python": "3.12.0"}) == [
        "walnut: warning: python: local 3.11.2, remote 3.12.0 — pickles may not round-trip"]


def drifted_local_numpy(monkeypatch) -> str:
    """This machine's numpy seen as 0.0.1 (the local side only: the offer's versions are the
    provider's own answer); returns the real version, which the provider declares."""
    real = drift.local_versions

    def local(names):
        names = list(names)
        return {**real(names), **({"numpy": "0.0.1"} if "numpy" in names else {})}

    monkeypatch.setattr(drift, "local_versions", local)
    return md.version("numpy")


def test_magics_launch_warns_of_what_the_kernel_imported(shell, monkeypatch):
    numpy = drifted_local_numpy(monkeypatch)
    result, cap = run(shell, "%walnut launch --budget 600000")
    assert result.success, cap.stderr
    assert [line for line in cap.stderr.splitlines() if "may differ" in line] == [
        f"walnut: warning: numpy: local 0.0.1, image 'python' has {numpy} — results and "
        "pickles may differ"]


@pytest.fixture
def jp_server_config(threaded_provider, tmp_path, ledger):
    (tmp_path / "renter").mkdir()
    return renter_server_config(tmp_path / "renter", ledger.path, [threaded_provider.url])


async def test_rest_launch_answers_the_drift(jp_fetch, threaded_provider, monkeypatch):
    numpy = drifted_local_numpy(monkeypatch)
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": threaded_provider.url, "shape": "cpu-small", "budget_mist": 600_000}),
        request_timeout=180)
    session = json.loads(resp.body)
    try:
        assert session["status"] == "running"
        assert session["drift"] == [
            f"numpy: local 0.0.1, image 'python' has {numpy} — results and pickles may differ"]
    finally:
        await jp_fetch("walnut", "sessions", session["id"], method="DELETE")


def test_launch_warns_of_the_images_declared_versions():
    numpy = md.version("numpy")
    declared = {"python": "3.0.1", "numpy": "0.1.0", "torch": None, "cuda": None,
                "not-installed-here": "1.0", "x": "<script>"}
    lines = drift.launch_warnings("scipy", declared, names=["numpy", "json"])
    python = drift.local_versions(["python"])["python"]
    assert lines == [
        f"numpy: local {numpy}, image 'scipy' has 0.1.0 — results and pickles may differ",
        f"python: local {python}, image 'scipy' has 3.0.1 — results and pickles may differ"]
    # what the launch installs comes at the versions asked for: no warning for it
    assert drift.launch_warnings("scipy", declared, ["numpy"], exclude=drift.required_names(
        "# pins\nnumpy==2.0  # from the notebook\n-e nonsense\n")) == [lines[1]]
    assert drift.launch_warnings("python", {"numpy": numpy}) == []
    assert drift.launch_warnings("old", None) == []  # an offer from before package lists
