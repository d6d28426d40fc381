"""Batch jobs end to end: real providers (process runtime), real renters, real notebooks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import FUNDS, ThreadedProvider, docker_or_skip, provider_config

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.renter.jobs.manager import JobError, JobManager
from jupyter_walnut.renter.manager import RenterManager

pytestmark = pytest.mark.timeout(300)

BUDGET = 600_000  # 600 s at the test shape's 1000 MIST/s


def notebook(path: Path, *cells: str, parameters: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def renter(home: Path, ledger, urls: list[str]) -> RenterManager:
    if not (home / "wallet.key").exists():
        home.mkdir(parents=True, exist_ok=True)
        key = KeyPair.generate()
        key.save(home / "wallet.key")
        ledger.fund(key.address, FUNDS)
    return RenterManager(home, urls, ledger=ledger)


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling real processes, bounded by the deadline


@pytest.fixture
def two_providers(tmp_path, ledger):
    nodes = [ThreadedProvider(tmp_path / f"p{i}", ledger,
                              config=provider_config(provider={"name": f"node-{i}",
                                                               "runtime": "process"}))
             for i in range(2)]
    yield nodes
    for n in nodes:
        if n.thread.is_alive():  # a test may have stopped it already
            n.stop()


def test_notebook_job_end_to_end_survives_the_renter_leaving(tmp_path, ledger,
                                                            threaded_provider):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.csv").write_text("1\n2\n3\n")
    nb = notebook(work / "analysis.ipynb",
                  "import json, os\n"
                  "values = [int(x) for x in open('data.csv')]\n"
                  "print('sum is', sum(values) * scale)",
                  "os.makedirs('outputs/plots', exist_ok=True)\n"
                  "open('outputs/result.txt', 'w').write(str(sum(values) * scale))\n"
                  "open('outputs/plots/p.bin', 'wb').write(bytes(range(256)))",
                  "from IPython.display import display\n"
                  "display({'application/vnd.walnut.metrics+json': {'total': sum(values) * scale,"
                  " 'attempt': int(os.environ['WALNUT_JOB_ATTEMPT'])}}, raw=True)",
                  parameters="scale = 1")
    home = tmp_path / "renter"
    first = JobManager(renter(home, ledger, [threaded_provider.url]))
    job = first.create(nb, files=[work / "data.csv"], budget_mist=BUDGET,
                       parameters={"scale": 10})
    started = asyncio.run(first.start(job["id"]))
    assert started["status"] == "running" and started["attempts"][0]["remote_id"]
    first.store.close()
    first.renter.store.close()
    # the laptop closes: nothing on the renter side follows the job any more

    svc_store = __import__("jupyter_walnut.provider.jobs", fromlist=["service"]).service(
        threaded_provider.node).store
    remote_id = started["attempts"][0]["remote_id"]
    wait_for(lambda: svc_store.get(remote_id)["status"] in ("succeeded", "failed"),
             what="the provider to finish the job alone")
    assert svc_store.get(remote_id)["status"] == "succeeded", svc_store.get(remote_id)
    # the provider stopped the session itself, so the renter pays only for the job
    sid = started["attempts"][0]["session_id"]
    assert threaded_provider.store.get(sid).status == "stopped"
    # and was paid from the renter's pre-signed vouchers, with nobody online to sign one
    assert threaded_provider.store.get(sid).voucher_mist > 0

    # a new process later: `walnut job status` follows it, downloads and verifies
    env = {**os.environ, "WALNUT_HOME": str(home), "WALNUT_LEDGER": str(tmp_path /
                                                                       "ledger.sqlite")}
    out = subprocess.run([sys.executable, "-m", "jupyter_walnut.renter.cli", "job", "status",
                          job["id"], "--json"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    final = json.loads(out.stdout)
    assert final["status"] == "succeeded" and final["verified"] is True, final
    results = Path(final["result_dir"])
    assert (results / "outputs" / "result.txt").read_text() == "60"
    assert (results / "outputs" / "plots" / "p.bin").read_bytes() == bytes(range(256))
    assert "sum is 60" in (results / "stdout.txt").read_text()
    executed = nbformat.read(results / "executed.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert final["metrics"] == {"total": 60, "attempt": 1}
    assert final["cost_mist"] > 0 and final["attempts"][0]["cells"] == 5


def test_job_progress_and_script_job(tmp_path, ledger, threaded_provider):
    script = tmp_path / "train.py"
    script.write_text("import os, sys\nprint('epoch 1')\nprint('warn', file=sys.stderr)\n"
                      "open(os.environ['WALNUT_JOB_OUTPUT'] + '/model.txt', 'w').write('w')\n")
    jm = JobManager(renter(tmp_path / "renter", ledger, [threaded_provider.url]))
    lines: list[str] = []
    job = asyncio.run(jm.run(script, budget_mist=BUDGET, on_progress=lines.append))
    assert job["status"] == "succeeded" and job["verified"], job
    results = Path(job["result_dir"])
    assert (results / "stdout.txt").read_text() == "epoch 1\n"
    assert (results / "stderr.txt").read_text() == "warn\n"
    assert (results / "outputs" / "model.txt").read_text() == "w"
    assert any("succeeded" in line for line in lines)

    slow = notebook(tmp_path / "slow.ipynb", "import time", "time.sleep(1.5)", "x = 1",
                    "time.sleep(1.5)")
    lines.clear()
    job = asyncio.run(jm.run(slow, budget_mist=BUDGET, on_progress=lines.append))
    assert job["status"] == "succeeded"
    assert any(line.startswith(("2/4 cell 2 of 4", "4/4 cell 4 of 4")) for line in lines), lines

    failing = notebook(tmp_path / "fail.ipynb", "x = 1", "raise ValueError('nope')", "y = 2")
    job = asyncio.run(jm.run(failing, budget_mist=BUDGET, max_retries=2))
    assert job["status"] == "failed" and len(job["attempts"]) == 1  # a bug is not retried
    assert "cell 2: ValueError: nope" in job["error"]
    assert job["verified"]  # partial results were still signed and downloaded
    assert (Path(job["result_dir"]) / "executed.ipynb").exists()


@pytest.mark.docker
def test_a_job_runs_inside_a_docker_session_and_leaves_nothing(tmp_path, ledger):
    docker_or_skip()
    import docker

    from jupyter_walnut.provider.image import ensure_gateway_image
    from jupyter_walnut.provider.runtimes.docker import DockerRuntime

    engine = docker.from_env()
    ensure_gateway_image(engine, progress=print)  # cached after the first build
    node = ThreadedProvider(
        tmp_path / "provider", ledger,
        config=provider_config(provider={"name": "docker-node", "runtime": "docker"}),
        runtime=DockerRuntime(engine, provider_id=f"jobs-{os.getpid()}-{time.time_ns()}"))
    try:
        script = tmp_path / "probe.py"
        script.write_text(
            "import json, os, socket\n"
            "print(json.dumps({'host': socket.gethostname(), 'uid': os.getuid()}))\n"
            "open(os.environ['WALNUT_JOB_OUTPUT'] + '/done.txt', 'w').write('ok')\n")
        jm = JobManager(renter(tmp_path / "renter", ledger, [node.url]))
        job = asyncio.run(jm.run(script, budget_mist=BUDGET))
        assert job["status"] == "succeeded" and job["verified"], job
        results = Path(job["result_dir"])
        # it ran in the session's container (hostname "walnut", uid 1000), not on the host
        assert json.loads((results / "stdout.txt").read_text()) == {"host": "walnut",
                                                                   "uid": 1000}
        assert (results / "outputs" / "done.txt").read_text() == "ok"
        sid = job["attempts"][0]["session_id"]
        assert node.store.get(sid).status == "stopped"
        left = engine.containers.list(all=True, filters={"label": f"walnut.session={sid}"})
        assert left == [], "the job's container outlived its session"
    finally:
        node.stop()
        engine.close()


def test_bad_input_is_one_clear_error(tmp_path, ledger, threaded_provider):
    jm = JobManager(renter(tmp_path / "renter", ledger, [threaded_provider.url]))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(Exception, match=r"a notebook \(.ipynb\) or a script"):
        jm.create(tmp_path / "notes.txt", budget_mist=BUDGET)
    with pytest.raises(Exception, match="no such file"):
        jm.create(tmp_path / "missing.ipynb", budget_mist=BUDGET)
    nb = notebook(tmp_path / "a.ipynb", "pass")
    with pytest.raises(JobError, match="positive integer"):
        jm.create(nb, budget_mist=0)
    (tmp_path / "big.bin").write_bytes(b"\0" * 9_000_000)
    with pytest.raises(Exception, match="over the 8 MB limit"):
        jm.create(nb, files=[tmp_path / "big.bin"], budget_mist=BUDGET)
    with pytest.raises(JobError, match="no job 'job-nope'"):
        jm.get("job-nope")


def test_sweep_over_two_providers(tmp_path, ledger, two_providers):
    from jupyter_walnut.renter.jobs.sweep import expand_grid, run_sweep, summary

    nb = notebook(tmp_path / "sweep.ipynb",
                  "import json, os, time\n"
                  "loss = (lr - 0.1) ** 2 + 0.01 * layers\n"
                  "time.sleep(0.5)\n"
                  "json.dump({'loss': loss}, open('outputs/metrics.json', 'w'))",
                  parameters="lr = 0.5\nlayers = 1")
    jm = JobManager(renter(tmp_path / "renter", ledger, [p.url for p in two_providers]))
    points = expand_grid({"lr": [0.05, 0.1], "layers": [1, 2]})
    assert len(points) == 4
    peak = {"now": 0, "max": 0}

    def seen(line: str) -> None:
        running = sum(1 for s in jm.renter.store.list(statuses=("running",)))
        peak["max"] = max(peak["max"], running)

    # requirements the image has: each run's session prepares them before its kernel
    sweep = asyncio.run(run_sweep(jm, nb, points, budget_mist=4 * BUDGET, concurrency=2,
                                  requirements="numpy\n", on_progress=seen))
    jobs = jm.store.list(sweep_id=sweep["id"])
    assert len(jobs) == 4 and all(j["status"] == "succeeded" for j in jobs), \
        [j["error"] for j in jobs]
    sessions = jm.renter.store.list()
    assert len(sessions) >= 4 and all(s.extra.get("requirements") == "numpy\n"
                                      for s in sessions)
    # a node's run that starts after another run there was ready restores the environment
    # that one prepared (two runs a loaded scheduler starts at once on one node both install)
    states = [s.extra["environment"]["state"] for s in sessions]
    assert set(states) <= {"ready", "cached"}, states
    later = [b for b in sessions for a in sessions
             if b.provider_url == a.provider_url and a.started_at and b.created_at > a.started_at]
    assert all(b.extra["environment"]["state"] == "cached" for b in later), \
        [(s.provider_url, s.created_at, s.started_at, s.extra["environment"]["state"])
         for s in sessions]
    assert sum(j["budget_mist"] for j in jobs) <= 4 * BUDGET
    assert {j["attempts"][0]["node"] for j in jobs} == {"node-0", "node-1"}
    assert peak["max"] <= 2
    table, best = summary(jobs, metric="loss", maximize=False)
    assert best["parameters"] == {"lr": 0.1, "layers": 1}
    text = table.text()
    assert "lr" in text and "loss" in text and "<- best" in text


def test_retry_after_the_provider_dies_mid_job(tmp_path, ledger, two_providers):
    nb = notebook(tmp_path / "long.ipynb",
                  "import os, time\nattempt = int(os.environ['WALNUT_JOB_ATTEMPT'])",
                  "if attempt == 1:\n    time.sleep(120)",
                  "open('outputs/done.txt', 'w').write(f'attempt {attempt}')")
    jm = JobManager(renter(tmp_path / "renter", ledger, [p.url for p in two_providers]),
                    unreachable_grace_s=1.0, poll_interval_s=0.2)
    job = jm.create(nb, budget_mist=2 * BUDGET, max_retries=1)
    job = asyncio.run(jm.start(job["id"]))
    first = job["attempts"][0]
    victim = next(p for p in two_providers if p.url == first["provider_url"])

    async def follow_until_cell_2():
        while (await jm.step(job["id"]))["attempts"][0]["cell"] < 2:
            await asyncio.sleep(0.1)  # polling the provider, bounded by the test timeout

    asyncio.run(asyncio.wait_for(follow_until_cell_2(), 60))
    victim.stop()  # the provider dies: its sessions and server go away
    job = asyncio.run(jm.watch(job["id"], timeout=120))
    assert job["status"] == "succeeded", job
    a1, a2 = job["attempts"]
    assert a1["status"] == "failed" and a1["retryable"] and "unreachable" in a1["error"]
    assert a2["provider_url"] != a1["provider_url"] and a2["status"] == "succeeded"
    assert (Path(job["result_dir"]) / "outputs" / "done.txt").read_text() == "attempt 2"
    assert job["budget_mist"] >= job["cost_mist"] > 0


def test_kernel_crash_is_retried_and_partial_outputs_kept(tmp_path, ledger, two_providers):
    nb = notebook(tmp_path / "crash.ipynb",
                  "import os\nattempt = int(os.environ['WALNUT_JOB_ATTEMPT'])\n"
                  "open(f'outputs/partial-{attempt}.txt', 'w').write('before')",
                  "if attempt == 1:\n    os.kill(os.getpid(), 9)",
                  "open('outputs/after.txt', 'w').write('after')")
    jm = JobManager(renter(tmp_path / "renter", ledger, [p.url for p in two_providers]),
                    poll_interval_s=0.2)
    job = asyncio.run(jm.run(nb, budget_mist=2 * BUDGET, max_retries=1))
    assert job["status"] == "succeeded", job
    a1, a2 = job["attempts"]
    assert "kernel died in cell 2" in a1["error"] and a1["retryable"]
    assert (Path(a1["result_dir"]) / "outputs" / "partial-1.txt").read_text() == "before"
    assert not (Path(a1["result_dir"]) / "outputs" / "after.txt").exists()
    assert (Path(a2["result_dir"]) / "outputs" / "after.txt").read_text() == "after"
    assert a1["verified"] and a2["verified"]


def test_tampered_results_are_detected(tmp_path, ledger, threaded_provider):
    import io
    import tarfile

    from jupyter_walnut.provider.jobs import service

    nb = notebook(tmp_path / "t.ipynb", "open('outputs/answer.txt', 'w').write('42')")
    jm = JobManager(renter(tmp_path / "renter", ledger, [threaded_provider.url]),
                    poll_interval_s=0.2)
    job = jm.create(nb, budget_mist=BUDGET)
    job = asyncio.run(jm.start(job["id"]))
    remote_id = job["attempts"][0]["remote_id"]
    svc = service(threaded_provider.node)
    wait_for(lambda: svc.store.get(remote_id)["status"] == "succeeded", what="the job")
    # the provider serves other results than it signed
    path = svc.results_path(remote_id)
    buf = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=buf, mode="w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "outputs/answer.txt":
                data = b"41"
                member.size = 2
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buf.getvalue())
    job = asyncio.run(jm.watch(job["id"], timeout=60))
    assert job["verified"] is False
    assert "do not match the digest the provider signed" in job["verification"]

    # a digest changed after signing fails the signature check
    job2 = jm.create(nb, budget_mist=BUDGET)
    job2 = asyncio.run(jm.start(job2["id"]))
    rid = job2["attempts"][0]["remote_id"]
    wait_for(lambda: svc.store.get(rid)["status"] == "succeeded", what="the second job")
    svc._update(rid, digest="0" * 64)
    job2 = asyncio.run(jm.watch(job2["id"], timeout=60))
    assert job2["verified"] is False
    assert "signature does not match" in job2["verification"]


def test_redundant_execution_compares_digests(tmp_path, ledger, two_providers):
    same = notebook(tmp_path / "det.ipynb", "open('outputs/v.txt', 'w').write(str(2 ** 10))")
    jm = JobManager(renter(tmp_path / "renter", ledger, [p.url for p in two_providers]),
                    poll_interval_s=0.2)
    job = asyncio.run(jm.run(same, budget_mist=2 * BUDGET, redundancy=2))
    assert job["status"] == "succeeded" and job["verified"] is True, job
    assert {a["node"] for a in job["attempts"]} == {"node-0", "node-1"}
    assert "2 providers produced identical outputs" in job["verification"]

    differs = notebook(tmp_path / "rand.ipynb",
                       "import secrets\nopen('outputs/v.txt', 'w').write(secrets.token_hex(8))")
    job = asyncio.run(jm.run(differs, budget_mist=2 * BUDGET, redundancy=2))
    assert job["verified"] is False
    assert "redundant runs disagree" in job["verification"]


@pytest.fixture
def jp_server_config(threaded_provider, tmp_path):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True},
                          "root_dir": str(tmp_path / "root")},
            "WalnutApp": {"providers": [threaded_provider.url],
                          "walnut_home": str(tmp_path / "server-renter"),
                          "poll_interval": 0.2}}


@pytest.fixture
def jp_root_dir(tmp_path):
    (tmp_path / "root").mkdir(exist_ok=True)
    return tmp_path / "root"


async def test_jobs_rest_for_the_sidebar(jp_fetch, jp_serverapp, tmp_path, ledger):
    from tornado.httpclient import HTTPClientError

    from jupyter_walnut.renter.extension.jobs_handlers import jobs_handlers

    jp_serverapp.web_app.add_handlers(".*$", [(jp_serverapp.base_url.rstrip("/") + p, h)
                                              for p, h in jobs_handlers()])
    manager = jp_serverapp.web_app.settings["walnut_manager"]
    ledger.fund(manager.key.address, FUNDS)
    manager.ledger = ledger
    manager.payments.ledger = ledger
    notebook(tmp_path / "root" / "nb.ipynb", "open('outputs/r.txt', 'w').write('ok')")
    resp = await jp_fetch("walnut", "jobs", method="POST", body=json.dumps(
        {"path": "nb.ipynb", "budget_mist": BUDGET}))
    assert resp.code == 201
    job = json.loads(resp.body)
    deadline = time.monotonic() + 120
    while job["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.3)  # polling the server, bounded by the deadline
        job = json.loads((await jp_fetch("walnut", "jobs", job["id"])).body)
    assert job["status"] == "succeeded" and job["verified"] is True, job
    listed = json.loads((await jp_fetch("walnut", "jobs")).body)["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("walnut", "jobs", method="POST", body=json.dumps(
            {"path": "../outside.ipynb", "budget_mist": BUDGET}))
    assert err.value.code == 400 and b"outside the server root" in err.value.response.body


@pytest.mark.parametrize("content", ["\u00e9t\u00e9", "\U000bb64b", 42, None])
def test_a_job_file_that_is_not_base64_is_a_400(content):
    """Found by the API fuzzer: non-ASCII "base64" made the provider answer 500."""
    from jupyter_walnut.common.errors import WalnutError
    from jupyter_walnut.provider.jobs import parse_submission

    with pytest.raises(WalnutError, match="is not base64") as refused:
        parse_submission({"kind": "script", "entry": "a.py", "files": {"a.py": content}})
    assert refused.value.status == 400
