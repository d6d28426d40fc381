"""A hostile provider against what the renter parses: `%%walnut run --pull` values, job
result archives, and the history CSV export.

The provider controls the session's kernel, so a cell that replaces the kernel's transfer
handler plays the provider exactly: the bytes a pull receives are whatever it chose. The
default stack (Docker runtime, TLS with a pinned self-signed certificate) runs the sessions;
DataFrames round-trip on a process-runtime node, since the session image has no pandas.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import io
import math
import os
import tarfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import ThreadedProvider, provider_config
from IPython.core.interactiveshell import InteractiveShell
from stack import StackNode
from test_jobs import notebook, renter
from test_magics import funded_home, run

from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.jobs.manager import JobManager

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

BUDGET = 600_000


@contextlib.contextmanager
def stack_node(directory: Path) -> Iterator[StackNode]:
    """A default-stack provider node with its own ledger."""
    with LocalLedger(directory / "ledger.sqlite") as ledger:
        node = StackNode(directory / "provider", ledger)
        try:
            yield node
        finally:
            node.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with stack_node(tmp_path_factory.mktemp("stack")) as node:
        yield node


def renter_shell(url: str, ledger, home: Path, monkeypatch) -> InteractiveShell:
    """An IPython shell whose Walnut renter uses `url`, with a running session on it."""
    import jupyter_walnut.renter.manager as manager

    monkeypatch.setenv("WALNUT_HOME", str(funded_home(home, ledger)))
    monkeypatch.setenv("WALNUT_LEDGER", str(ledger.path))
    monkeypatch.setenv("WALNUT_PROVIDERS", url)
    monkeypatch.setattr(manager, "_current", None)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_walnut")
    result, cap = run(ip, f"%walnut launch --budget {BUDGET}")
    assert result.success, cap.stderr
    return ip


def close_shell(ip: InteractiveShell) -> None:
    ip.run_line_magic("walnut", "stop --all")
    ip.run_line_magic("unload_ext", "jupyter_walnut")
    ip.user_ns.clear()


@pytest.fixture
def shell(stack, tmp_path, monkeypatch):
    ip = renter_shell(stack.pinned_url, stack.ledger, tmp_path / "renter", monkeypatch)
    yield ip
    close_shell(ip)


def plant(ip: InteractiveShell, answer: str) -> None:
    """The provider's kernel answers every transfer with `answer` (remote code that sets
    `data` and `buffers`)."""
    result, cap = run(ip, "%%walnut run\n"
                          "def _planted(comm, msg):\n"
                          + "".join(f"    {line}\n" for line in answer.splitlines()) +
                          "    comm.send(data, buffers=buffers)\n"
                          "    comm.close()\n"
                          "get_ipython().kernel.comm_manager.register_target("
                          "'walnut.transfer', _planted)\n")
    assert result.success, cap.stderr


def test_a_planted_pickle_never_runs_on_the_renter(shell, tmp_path):
    marker = tmp_path / "pwned"
    # a pickle whose loading opens (creates) a file on the machine that loads it
    plant(shell, "import io, pickle\n"
                 "class Planted:\n"
                 f"    def __reduce__(self): return (io.open, ({str(marker)!r}, 'w'))\n"
                 "buffers = [pickle.dumps(Planted())]\n"
                 "data = {'ok': True, 'size': len(buffers[0]), 'serializer': 'data'}")
    result, cap = run(shell, "%%walnut run --pull x\nx = 1")
    assert not marker.exists(), "the provider's pickle ran code on the renter"
    assert not result.success and "x" not in shell.user_ns
    assert "cannot pull 'x'" in cap.stderr and "not Walnut data" in cap.stderr
    assert "Traceback" not in cap.stdout + cap.stderr

    # the same pickle inside a NumPy array of objects, dressed as Walnut data
    plant(shell, "import io, pickle, numpy as np\n"
                 "class Planted:\n"
                 f"    def __reduce__(self): return (io.open, ({str(marker)!r}, 'w'))\n"
                 "npy = io.BytesIO()\n"
                 "np.save(npy, np.array([Planted()], dtype=object), allow_pickle=True)\n"
                 "buffers = [b'{\"t\":\"ndarray\",\"b\":1}', npy.getvalue()]\n"
                 "data = {'ok': True}")
    result, cap = run(shell, "%%walnut run --pull x\nx = 1")
    assert not marker.exists(), "the provider's object array ran code on the renter"
    assert not result.success and "dtype object" in cap.stderr


def test_plain_values_and_arrays_round_trip_exactly(shell):
    value = {"big": 2**100 + 1, "neg": -0.0, "nan": math.nan, "text": "héllo\x00",
             "raw": b"\x00\xff" * 10, (1, "k"): [True, None, 1.5], 3: {"s": {1, 2}},
             "frozen": frozenset({"a"}), "tuple": (1, (2, [3]))}
    arrays = {"f32": np.arange(12, dtype=np.float32).reshape(3, 4),
              "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              "rec": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
              "text": np.array(["a", "bc"]), "scalar": np.int64(-7)}
    shell.user_ns.update(value=value, arrays=arrays)
    result, cap = run(shell, "%%walnut run --push value,arrays --pull value2,arrays2\n"
                             "value2, arrays2 = value, arrays\n"
                             "arrays2['f32'] = arrays2['f32'] * 2\n")
    assert result.success, cap.stderr
    got = shell.user_ns["value2"]
    assert got.keys() == value.keys()
    for key, expected in value.items():
        if key == "nan":
            assert math.isnan(got[key])
        else:
            assert got[key] == expected and type(got[key]) is type(expected), key
    assert math.copysign(1, got["neg"]) == -1
    back = shell.user_ns["arrays2"]
    np.testing.assert_array_equal(back["f32"], arrays["f32"] * 2)
    for key in ("fortran", "rec", "text"):
        assert back[key].dtype == arrays[key].dtype and back[key].shape == arrays[key].shape
        np.testing.assert_array_equal(back[key], arrays[key])
    assert back["fortran"].flags.f_contiguous and back["f32"].flags.writeable
    assert back["scalar"] == -7 and type(back["scalar"]) is np.int64


def test_what_is_not_data_needs_a_loud_opt_in(shell):
    result, cap = run(shell, "%%walnut run\n"
                             "from fractions import Fraction\n"
                             "class Model:\n    pass\n"
                             "m = {'w': Model()}\nf = Fraction(1, 3)\n")
    assert result.success, cap.stderr
    result, cap = run(shell, "%%walnut run --pull m\npass")
    assert not result.success
    assert "cannot pull 'm': m['w'] is of type __main__.Model" in cap.stderr
    assert "--serializer pickle" in cap.stderr and "Traceback" not in cap.stderr
    assert "m" not in shell.user_ns

    result, cap = run(shell, "%%walnut run --pull f --serializer pickle\npass")
    assert result.success, cap.stderr
    assert shell.user_ns["f"] == Fraction(1, 3)
    assert "warning: --serializer pickle unpickles what the provider's kernel sends" \
        in cap.stderr and "run any code on this machine" in cap.stderr


def test_dataframes_and_series_round_trip_exactly(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    with LocalLedger(tmp_path / "ledger.sqlite") as ledger:
        node = ThreadedProvider(tmp_path / "provider", ledger)  # host Python: has pandas
        ip = renter_shell(node.url, ledger, tmp_path / "renter", monkeypatch)
        try:
            df = pd.DataFrame({"i": [1, 2, 3], "s": ["x", None, "z"], "f": [0.5, math.nan, 2.0],
                               "t": pd.to_datetime(["2026-01-01", None, "2026-12-01"], utc=True),
                               "c": pd.Categorical(["a", "b", "a"])},
                              index=pd.Index([10, 20, 30], name="row"))
            series = pd.Series([1.5, 2.5], index=["p", "q"], name=("metric", 1))
            ip.user_ns.update(df=df, series=series)
            result, cap = run(ip, "%%walnut run --push df,series --pull df2,series2\n"
                                  "df2, series2 = df.copy(), series * 2\n")
            assert result.success, cap.stderr
            pd.testing.assert_frame_equal(ip.user_ns["df2"], df)
            pd.testing.assert_series_equal(ip.user_ns["series2"], series * 2)
        finally:
            close_shell(ip)
            node.stop()


# --- job result archives -----------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_job(stack, tmp_path_factory):
    """A job that ran on the stack: (job manager, job, its attempt, the provider's store)."""
    from jupyter_walnut.provider.jobs import service

    work = tmp_path_factory.mktemp("job")
    jm = JobManager(renter(work / "renter", stack.ledger, [stack.pinned_url]),
                    poll_interval_s=0.2)
    nb = notebook(work / "t.ipynb", "open('outputs/answer.txt', 'w').write('42')")
    job = asyncio.run(jm.run(nb, budget_mist=BUDGET))
    assert job["status"] == "succeeded" and job["verified"] is True, job
    yield jm, job, job["attempts"][0], service(stack.node)
    jm.store.close()
    jm.renter.store.close()


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE,
           link: str = "", size: int | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = (len(data) if data is not None else 0) if size is None else size
    return info, data if kind == tarfile.REGTYPE else None


def serve_results(jm, job, attempt, svc, data: bytes, announced: int | None = None) -> dict:
    """The provider serves `data` as the attempt's results; the renter fetches them again."""
    svc.results_path(attempt["remote_id"]).write_bytes(data)
    attempt["result_bytes"] = len(data) if announced is None else announced
    asyncio.run(jm._finish_attempt(job, attempt))
    return attempt


def test_hostile_result_archives_are_refused_and_write_nothing(finished_job, tmp_path):
    jm, job, attempt, svc = finished_job
    jm.max_unpacked_bytes, jm.max_result_files = 1_000_000, 50
    outside = tmp_path / "outside.txt"
    target = Path(attempt["result_dir"])
    before = sorted(p.relative_to(target.parent) for p in target.parent.rglob("*"))
    hostile = {
        "a path outside the results folder": archive(member(f"../../{outside.name}")),
        "a path outside": archive(member(str(outside))),
        "symbolic link": archive(member("outputs/link", None, tarfile.SYMTYPE, str(tmp_path)),
                                 member("outputs/link/outside.txt")),
        "hard link": archive(member("outputs/hard", None, tarfile.LNKTYPE, str(outside))),
        "device or pipe": archive(member("outputs/dev", None, tarfile.CHRTYPE)),
        "bytes once unpacked": archive(member("outputs/bomb", b"\0" * 5_000_000)),
        "more than 50 members": archive(*(member(f"outputs/{i}") for i in range(60))),
        "appears twice": archive(member("outputs/a"), member("outputs/a")),
        "not a readable .tar.gz": b"\x1f\x8b not really gzip",
    }
    for reason, data in hostile.items():
        a = serve_results(jm, job, attempt, svc, data)
        assert a["verified"] is False and reason in a["verification"], (reason, a)
        assert not outside.exists()
        # all or nothing: the results folder is as it was, no partial files beside it
        assert sorted(p.relative_to(target.parent) for p in target.parent.rglob("*")) == \
            before, reason

    # the provider announced fewer bytes than it sends: the download stops there
    a = serve_results(jm, job, attempt, svc, archive(member("outputs/x", os.urandom(4000))),
                      announced=100)
    assert a["verified"] is False and "more than 100 bytes" in a["verification"]


# --- the history CSV --------------------------------------------------------------------

FORMULA = "=1+1+cmd|' /C calc'!A0"


def test_history_csv_neutralises_formulas(tmp_path):
    """GET /walnut/analytics/history.csv writes `history_csv(renter_history(manager))`: a
    provider that calls itself by a formula gets a text cell in the renter's spreadsheet."""
    from jupyter_walnut.renter.extension.analytics_handlers import history_csv, renter_history

    with LocalLedger(tmp_path / "ledger.sqlite") as ledger:
        node = ThreadedProvider(tmp_path / "provider", ledger,
                                config=dataclasses.replace(provider_config(), name=FORMULA))
        try:
            manager = renter(tmp_path / "renter", ledger, [node.url])
            session = asyncio.run(manager.launch(node.url, "cpu-small", budget_mist=BUDGET))
            asyncio.run(manager.stop(session.id))
            rows = list(csv.DictReader(io.StringIO(history_csv(renter_history(manager)))))
        finally:
            node.stop()
    [row] = rows
    assert row["id"] == session.id
    assert row["node"] == "'" + FORMULA  # text in a spreadsheet, not a formula
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())
