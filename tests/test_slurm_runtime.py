"""The Slurm runtime against a real one-node cluster (.ci/slurm.sh): two CPUs, two fake GPUs.

Each session is a Slurm job running the session gateway; the renter drives it through the
provider's pinned TLS API as on the default stack. Covered: a job with the shape's limits
and GRES, cells, interrupt, kernel restart, stop; a session queued behind the site's work
shows its position, is not billed while queued and can be stopped there; `scancel` and the
cluster's time limit end a session with the reason and settle what ran; a restarted provider
adopts its running job with the kernel's state and the metered time.

Skipped without a Slurm cluster unless WALNUT_REQUIRE_SLURM=1 makes that a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from conftest import open_channel, provider_config
from kernel_ws import KernelWS
from stack import StackNode

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.ledger.vouchers import Voucher
from jupyter_walnut.provider.config import ConfigError, load_config
from jupyter_walnut.provider.node import ProviderNode
from jupyter_walnut.provider.runtimes.slurm import SlurmRuntime, gres_gpus, job_name
from jupyter_walnut.renter.provider_client import ProviderClient

pytestmark = [pytest.mark.timeout(600)]

PRICE = 10  # MIST per second
DEPOSIT = 600_000


def slurm_or_skip() -> None:
    """Skip without a Slurm cluster, unless WALNUT_REQUIRE_SLURM=1 makes that a failure."""
    reason = ""
    if shutil.which("sinfo") is None:
        reason = "sinfo is not on PATH (run .ci/slurm.sh)"
    else:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                             timeout=30)
        if out.returncode != 0 or not {"idle", "mix", "alloc"} & set(out.stdout.split()):
            reason = f"no Slurm node is up: {out.stderr.strip() or out.stdout.strip()}"
    if reason:
        if os.environ.get("WALNUT_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm cluster required (WALNUT_REQUIRE_SLURM=1): {reason}")
        pytest.skip(f"no Slurm cluster: {reason}")


def slurm_config():
    return provider_config(
        provider={"name": "slurm-node", "runtime": "slurm"},
        shapes=[{"name": "cpu-1", "gpus": 0, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": PRICE},
                {"name": "gpu-1", "gpus": 1, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": PRICE}],
        availability={"max_sessions": 8},
        # vouchers are sent by the tests that check payment; the others must not be stopped
        settlement={"grace_s": 3600},
        # one node: the gateway listens on loopback, and the partition is named
        slurm={"partition": "walnut", "bind": "127.0.0.1"})


class SlurmStack(StackNode):
    """The default stack (pinned self-signed TLS) with sessions as Slurm jobs."""

    def __init__(self, state_dir, ledger, identity: KeyPair | None = None) -> None:
        super().__init__(state_dir, ledger, config=slurm_config(), identity=identity,
                         runtime="slurm")

    def _make_runtime(self):
        runtime = SlurmRuntime(self.state_dir / "slurm", "t" + self.identity.address[2:12],
                               self.config.slurm, self.config.availability.max_session_seconds)
        runtime.poll_interval_s = 0.2
        return runtime


def wait_for(condition: Callable[[], object], timeout: float = 120, what: str = "") -> object:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling an external scheduler, bounded by the deadline


def squeue(*args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", *args, "-o", "%i|%j|%T|%b|%C|%m|%l"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True).stdout
    fields = dict(p.split("=", 1) for p in out.split() if "=" in p)
    return fields.get("JobState", "GONE")


class Session:
    """One renter's session on the Slurm stack, driven from the node's loop."""

    def __init__(self, stack: SlurmStack, shape: str = "cpu-1", wait: bool = True) -> None:
        self.stack = stack
        self.key = KeyPair.generate()
        self.client = ProviderClient(stack.pinned_url, self.key)
        self.channel = open_channel(stack.ledger, self.key, stack, deposit=DEPOSIT, price=PRICE)
        created = stack.run(self.client.create_session(image="python", shape=shape,
                                                       channel_id=self.channel))
        self.id, self.token = created["id"], created["access_token"]
        self.kernel: dict | None = None
        self.ws: KernelWS | None = None
        if wait:
            self.start_kernel()

    def start_kernel(self) -> None:
        async def start():
            await self.client.wait_running(self.id, timeout=150)
            return await self.client.gateway(self.id, self.token, "POST", "api/kernels",
                                             {"name": "python3"})

        self.kernel = self.stack.run(start())

    def public(self) -> dict:
        return self.stack.run(self.client.get_session(self.id))

    @property
    def job_id(self) -> str:
        return self.stack.store.get(self.id).runtime_ref

    def execute(self, code: str, timeout: float = 60, on_message=None):
        async def run():
            if self.ws is None:
                self.ws = KernelWS(await self.client.kernel_websocket(
                    self.id, self.token, self.kernel["id"]))
            return await self.ws.execute(code, timeout=timeout, on_message=on_message)

        return self.stack.run(run(), timeout=timeout + 30)

    def pay(self, amount: int) -> None:
        voucher = Voucher.sign(self.key, self.channel, amount)
        self.stack.run(self.client.send_voucher(self.id, voucher.amount_mist,
                                                voucher.signature))

    def stop(self) -> dict:
        return self.stack.run(self.client.stop_session(self.id))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    slurm_or_skip()
    tmp = tmp_path_factory.mktemp("slurm")
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        node = SlurmStack(tmp / "provider", ledger)
        try:
            yield node
        finally:
            node.stop()


@pytest.fixture
def site_job():
    """The site's own work filling the node's CPUs; cancelled at the end."""
    jobs = []

    def submit(cpus: int = 2) -> str:
        out = subprocess.run(["sbatch", "--parsable", "-p", "walnut", "-c", str(cpus),
                              "--mem=100", "-J", "site-work", "--output=/dev/null",
                              "--wrap", "sleep 600"],
                             capture_output=True, text=True, check=True).stdout
        jobs.append(out.strip().split(";")[0])
        wait_for(lambda: job_state(jobs[-1]) == "RUNNING", what="the site's job to run")
        return jobs[-1]

    yield submit
    for job in jobs:
        subprocess.run(["scancel", job], check=False)


def test_a_session_is_a_slurm_job_with_its_shape_and_runs_cells(stack):
    s = Session(stack, shape="gpu-1")
    job = [j for j in squeue("-j", s.job_id)][0]
    assert job[1] == job_name(stack.node.runtime.provider_id, s.id)
    assert job[2] == "RUNNING" and job[4] == "1" and job[5] == "512M"
    assert "gpu:1" in job[3]  # the GRES the shape asked for
    # the kernel runs on the allocated node, inside the job, with the GPU Slurm gave it
    result = s.execute("import os; print(os.environ['SLURM_JOB_ID'], "
                       "os.environ['CUDA_VISIBLE_DEVICES'])")
    assert result.status == "ok", result.error
    assert result.stdout.split() == [s.job_id, "0"]
    assert s.execute("x = 6 * 7").status == "ok"
    assert s.execute("print(x)").stdout.strip() == "42"
    # interrupt a long cell once it is running (the callback runs on the node's loop)
    started = asyncio.Event()
    result = s.execute("import time; print('sleeping', flush=True); time.sleep(120)",
                       on_message=lambda m: asyncio.ensure_future(_interrupt(s, m, started)))
    assert result.status == "error" and result.error["ename"] == "KeyboardInterrupt"
    assert s.execute("print(x)").stdout.strip() == "42"  # the kernel kept its state
    # a restarted kernel starts empty, in the same job
    stack.run(s.client.gateway(s.id, s.token, "POST", f"api/kernels/{s.kernel['id']}/restart"))
    s.ws = None
    result = s.execute("print('x' in dir())")
    assert result.stdout.strip() == "False"
    job_id = s.job_id
    session_dir = stack.node.runtime.state_dir / s.id
    assert session_dir.exists()
    stopped = s.stop()
    assert stopped["status"] == "stopped"
    assert job_state(job_id) not in ("RUNNING", "PENDING", "COMPLETING")
    assert not session_dir.exists()  # the workspace went with the job


async def _interrupt(s: Session, msg: dict, started: asyncio.Event) -> None:
    if started.is_set() or msg["header"]["msg_type"] != "stream" or \
            "sleeping" not in msg["content"]["text"]:
        return
    started.set()
    await s.client.gateway(s.id, s.token, "POST", f"api/kernels/{s.kernel['id']}/interrupt")


def test_a_queued_session_shows_its_position_and_is_not_billed(stack, site_job):
    site = site_job(cpus=2)  # the cluster is busy with the site's own work
    first = Session(stack, wait=False)
    second = Session(stack, wait=False)
    wait_for(lambda: first.public()["reason"] == "queued (position 1)",
             what="the first session's queue position")
    view = wait_for(lambda: (v := second.public())["reason"] == "queued (position 2)" and v,
                    what="the second session's queue position")
    assert view["status"] == "starting" and view["cost_mist"] == 0
    # a queued session stopped by its renter leaves the queue, charged nothing
    second_job = second.job_id or ""
    stopped = second.stop()
    assert stopped["status"] == "stopped" and stopped["cost_mist"] == 0
    wait_for(lambda: not [j for j in squeue("-t", "PENDING")
                          if j[1] == job_name(stack.node.runtime.provider_id, second.id)],
             what="the stopped session's job to leave the queue")
    assert second_job == "" or job_state(second_job) != "PENDING"
    after = second.public()  # the renter's stop stands: not turned into a failed start
    assert (after["status"], after["reason"], after["cost_mist"]) == (
        "stopped", "stopped by renter", 0)
    assert first.public()["reason"] == "queued (position 1)"
    assert stack.store.get(first.id).running_ms == 0
    freed_at = time.time()
    subprocess.run(["scancel", site], check=True)  # the site's work ends: ours runs
    first.start_kernel()
    view = first.public()
    assert view["status"] == "running" and view["reason"] == ""
    assert view["started_at"] >= freed_at  # metering began when the job ran, not before
    assert first.execute("print(1 + 1)").stdout.strip() == "2"
    # the renter who left the queue gets its whole deposit back
    wait_for(lambda: stack.ledger.get_channel(second.channel).closed, what="the refund")
    assert stack.ledger.get_channel(second.channel).refunded == DEPOSIT
    first.stop()


def test_scancel_by_the_site_ends_the_session_with_the_reason_and_settles(stack):
    s = Session(stack)
    provider_before = stack.ledger.balance(stack.identity.address)
    wait_for(lambda: stack.store.get(s.id).running_ms >= 1500, what="1.5 s of metering")
    subprocess.run(["scancel", s.job_id], check=True)
    view = wait_for(lambda: (v := s.public())["status"] != "running" and v,
                    what="the session to end")
    assert "the cluster cancelled the job" in view["reason"]
    cost = view["cost_mist"]
    assert cost >= 15  # what ran, at 10 MIST/s
    s.pay(cost)
    wait_for(lambda: stack.ledger.get_channel(s.channel).closed, what="settlement")
    channel = stack.ledger.get_channel(s.channel)
    assert channel.claimed == cost and channel.refunded == DEPOSIT - cost
    assert stack.ledger.balance(stack.identity.address) - provider_before == cost


def node_back(node: str) -> bool:
    """Whether the node is up again, asking Slurm to resume it while it is not (with
    ReturnToService=2 it may come back by itself, and then a resume is refused)."""
    state = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%t"], capture_output=True,
                           text=True).stdout.strip()
    if state in ("idle", "mix", "alloc"):
        return True
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"],
                   capture_output=True, check=False)
    return False


def test_a_node_failure_ends_the_session_with_the_reason(stack):
    s = Session(stack)
    node = subprocess.run(["squeue", "-h", "-j", s.job_id, "-o", "%N"], capture_output=True,
                          text=True, check=True).stdout.strip()
    try:  # the site's node goes down under the session
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=down",
                        "reason=walnut-test"], check=True)
        view = wait_for(lambda: (v := s.public())["status"] != "running" and v,
                        what="the node failure to end the session")
    finally:
        wait_for(lambda: node_back(node), what="the node to come back")
    assert "the cluster node running the session failed" in view["reason"]
    assert view["cost_mist"] == stack.store.get(s.id).running_ms * PRICE // 1000


def test_the_clusters_time_limit_ends_the_session_with_the_reason(stack):
    s = Session(stack)
    assert s.execute("print('up')").stdout.strip() == "up"
    # the site shortens the job's limit, as an operator or a QoS would
    subprocess.run(["scontrol", "update", f"jobid={s.job_id}", "TimeLimit=0:02"], check=True)
    view = wait_for(lambda: (v := s.public())["status"] != "running" and v, timeout=150,
                    what="the time limit to end the session")
    assert "time limit" in view["reason"]
    assert job_state(s.job_id) == "TIMEOUT"
    assert view["cost_mist"] == stack.store.get(s.id).running_ms * PRICE // 1000


REWRITE_ENDPOINT = """
import json, os
path = os.path.join(os.environ["HOME"], "..", "endpoint.json")
data = json.load(open(path))
data["port"] = {port}
json.dump(data, open(path, "w"))
"""


class Canary:
    """A loopback listener that counts the connections it is sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture
def canary():
    listener = Canary()
    yield listener
    listener.sock.close()


def test_a_restarted_provider_adopts_its_running_job(tmp_path, ledger, canary):
    slurm_or_skip()
    identity = KeyPair.generate()
    first = SlurmStack(tmp_path / "provider", ledger, identity=identity)
    try:
        s = Session(first)
        assert s.execute("state = 'kept'").status == "ok"
        # the renter's code points the job's address file at a listener of its own
        result = s.execute(REWRITE_ENDPOINT.format(port=canary.port))
        assert result.status == "ok", result.error
        job_id = s.job_id
        wait_for(lambda: first.store.get(s.id).running_ms >= 1000, what="1 s of metering")
        metered = first.store.get(s.id).running_ms
    finally:
        first.stop(stop_sessions=False)  # the provider goes away; its Slurm job stays
    assert job_state(job_id) == "RUNNING"
    shutil.rmtree(tmp_path / "provider" / "provider")  # the stack makes a fresh certificate
    second = SlurmStack(tmp_path / "provider", ledger, identity=identity)
    try:
        s.stack, s.ws = second, None
        s.client = ProviderClient(second.pinned_url, s.key)
        view = s.public()
        assert view["status"] == "running" and second.store.get(s.id).runtime_ref == job_id
        assert view["running_seconds"] >= metered // 1000  # the metered time carried over
        assert s.execute("print(state)").stdout.strip() == "kept"
        assert canary.connections == 0  # the proxy went to the recorded gateway, not there
        assert s.stop()["status"] == "stopped"
        assert job_state(job_id) != "RUNNING"
    finally:
        second.stop()


def test_slurm_table_is_validated_with_the_key_named():
    with pytest.raises(ConfigError, match="slurm.partition"):
        provider_config(slurm={"partition": "bad name; rm"})
    with pytest.raises(ConfigError, match="slurm.colour: unknown key"):
        provider_config(slurm={"colour": "blue"})
    with pytest.raises(ConfigError, match="slurm.shapes.nope: no shape"):
        provider_config(slurm={"shapes": {"nope": {"partition": "gpu"}}})
    with pytest.raises(ConfigError, match="slurm.state_dir: must be an absolute path"):
        provider_config(slurm={"state_dir": "relative/dir"})
    config = provider_config(slurm={"partition": "cpu", "qos": "low",
                                    "shapes": {"gpu-1": {"partition": "gpu"}}})
    assert config.slurm.placement("gpu-1").partition == "gpu"
    assert config.slurm.placement("gpu-1").qos == "low"
    assert config.slurm.placement("cpu-small").partition == "cpu"
    assert gres_gpus("gpu:a100:4(S:0-1),gpu:2,shard:8") == 6


def test_init_writes_a_config_for_the_cluster_it_sees(tmp_path, ledger):
    slurm_or_skip()
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, "-m", "jupyter_walnut.provider.cli", "--home",
                          str(home), "init", "--runtime", "slurm"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    config = load_config(home / "provider.toml")
    assert config.runtime == "slurm" and config.slurm.partition == "walnut"
    assert [s.gpus for s in config.shapes] == [0, 1]  # the cluster's fake GPUs, not this host's
    node = ProviderNode(config, KeyPair.load(home / "identity.key"), tmp_path / "state",
                        ledger=ledger)
    try:
        assert isinstance(node.runtime, SlurmRuntime)
        offer = node.offer()
        assert offer["runtime"] == "slurm"
        assert offer["cluster"]["gpus"] == 2 and offer["cluster"]["nodes"] == 1
        assert {s["name"] for s in offer["shapes"] if s["available"]} == {"cpu-small", "gpu-1"}
    finally:
        node.store.close()
