"""Node verification against the default stack (Docker sessions behind TLS, the renter
pinning the certificate): a provider whose offer claims more than its container gives is
caught at session start and paid only for the check; an honest one passes; the checks and
the attestation's signature are exercised on figures too. `WALNUT_TEST_RUNTIME=process` /
`WALNUT_TEST_TLS=off` run the cheap leg."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading

import pytest
from conftest import FUNDS, provider_config
from stack import StackNode, stack_runtime

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.probe import run_probe
from jupyter_walnut.common.probe_check import check, make_attestation, verify_attestation
from jupyter_walnut.provider.runtimes.docker import DockerRuntime
from jupyter_walnut.renter.manager import RenterError, RenterManager

pytestmark = pytest.mark.timeout(180)

HOST_CPUS = len(os.sched_getaffinity(0))
PRICE = 1000
# the final voucher, not a timeout, settles: the provider waits this long for it
SETTLE = {"settle_after_s": 30}


def shape(name: str, cpus: float, memory_mb: int = 1024) -> dict:
    return {"name": name, "gpus": 0, "cpus": cpus, "memory_mb": memory_mb,
            "price_per_second_mist": PRICE}


@pytest.fixture
def renter(tmp_path, ledger, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))

    def make(urls: list[str]) -> RenterManager:
        key = KeyPair.generate()
        ledger.fund(key.address, FUNDS)
        return RenterManager(tmp_path / "renter", urls, key=key, ledger=ledger)

    return make


def settled_event(node: StackNode) -> threading.Event:
    """Set when the provider settles a channel (the node's own session event hook; the node
    runs in its own thread)."""
    event, chained = threading.Event(), node.sessions.on_event

    def on_event(kind, rec):
        chained(kind, rec)
        if kind == "settled":
            event.set()

    node.sessions.on_event = on_event
    return event


class HalfCPUDockerRuntime(DockerRuntime):
    """A cheating provider: sells the shape's CPUs, starts the container with half."""

    def _container_kwargs(self, spec, name: str) -> dict:
        kwargs = super()._container_kwargs(spec, name)
        kwargs["nano_cpus"] //= 2
        return kwargs


class CheatingNode(StackNode):
    def _make_runtime(self):
        if self.runtime_name != "docker":
            return super()._make_runtime()  # the process leg cheats in its offer alone
        return HalfCPUDockerRuntime(self.docker, provider_id="stack-" + self.identity.address[2:12])


@pytest.fixture
def stack_factory(tmp_path, ledger):
    """Start default-stack provider nodes; stopped (sessions too) after the test."""
    nodes: list[StackNode] = []

    def start(shapes: list[dict], kind: type[StackNode] = StackNode) -> StackNode:
        config = provider_config(provider={"name": "verify-node", "runtime": stack_runtime()},
                                 settlement=SETTLE, shapes=shapes)
        node = kind(tmp_path / f"provider-{len(nodes)}", ledger, config=config)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.mark.asyncio
async def test_a_provider_claiming_more_cpus_is_caught_and_paid_only_for_the_check(
        stack_factory, renter, ledger):
    if stack_runtime() == "docker":  # sells every CPU here, its containers get half
        claimed, has = HOST_CPUS, HOST_CPUS / 2
    else:  # a process cannot be limited: the offer claims more than the machine has
        claimed, has = HOST_CPUS + 6, HOST_CPUS
    node = stack_factory([shape("big", claimed)], CheatingNode)
    settled = settled_event(node)
    manager = renter([node.pinned_url])
    before = ledger.balance(manager.key.address)

    with pytest.raises(RenterError) as caught:
        await manager.launch(node.pinned_url, "big", budget_mist=300 * PRICE)

    err = caught.value
    assert err.status == 409
    assert f"promises {claimed:g} CPUs, the container has {has:g}" in err.message, err.message
    assert "you paid only for the check" in err.message
    [session] = manager.store.list()
    assert session.status == "stopped"
    assert session.reason.startswith("verification failed")
    result = session.extra["verification"]
    assert result["ok"] is False and result["status"] == "failed"
    assert result["measured"]["cpus"] == has
    rec = node.store.get(session.id)
    assert rec.status == "stopped"  # stopped on the provider too: no more metering
    assert not (manager.home / "kernels").exists()
    # the money: the final voucher covers the check's seconds, the rest comes back
    assert await asyncio.to_thread(settled.wait, 60), "the provider never settled"
    channel = ledger.get_channel(session.channel_id)
    assert channel.closed
    assert 0 < channel.claimed == rec.cost_mist == session.voucher_mist
    assert rec.running_ms <= (result["check_seconds"] + 2) * 1000  # the check, no more
    assert channel.claimed <= PRICE * (result["check_seconds"] + 2)
    assert ledger.balance(manager.key.address) == before - channel.claimed


@pytest.mark.asyncio
async def test_an_honest_provider_passes_and_the_session_is_usable(
        stack_factory, renter, ledger, tmp_path):
    node = stack_factory([shape("fair", HOST_CPUS)])
    manager = renter([node.pinned_url])
    steps: list[str] = []

    session = await manager.launch(node.pinned_url, "fair", budget_mist=300 * PRICE,
                                   on_progress=steps.append)

    assert "verifying the hardware" in steps
    assert session.status == "running"
    result = session.extra["verification"]
    assert result["ok"] is True, result["reasons"]
    assert result["measured"]["cpus"] == HOST_CPUS
    assert result["measured"]["benchmark_device"] == "cpu"
    assert result["measured"]["gflops"] >= result["expected"]["gflops_floor"]
    assert result["attestation"] == "none"
    assert (tmp_path / "jupyter-data" / "kernels" / f"walnut-{session.id}").is_dir()
    assert node.store.get(session.id).status == "running"
    await manager.stop(session.id)


@pytest.mark.asyncio
async def test_a_published_attestation_is_compared_with_the_measurement(
        stack_factory, renter, ledger):
    node = stack_factory([shape("fair", 1)])
    report = run_probe(0.3)
    inflated = copy.deepcopy(report)  # the provider attests 10x what it gives
    inflated["benchmark"]["gflops"] = report["benchmark"]["gflops"] * 10
    attestation = make_attestation(inflated, node.identity)
    ledger.register_provider(node.identity, endpoint=node.url,
                             tls_fingerprint=node.fingerprint or "00" * 32,
                             specs=json.dumps({"attestation": attestation}),
                             price_per_second_mist=PRICE)
    manager = renter([node.pinned_url])

    session = await manager.launch(node.pinned_url, "fair", budget_mist=300 * PRICE)

    result = session.extra["verification"]
    assert result["ok"] is True  # the container gives what the offer says...
    assert result["attestation"] == "differs"  # ...but far less than was attested
    assert any("the provider attested" in w for w in result["warnings"])
    await manager.stop(session.id)


# --- the checks on figures: GPUs, which this machine may not have --------------------------

def gpu_report(models: list[str], gflops: float, memory_mb: int = 81559,
               uuids: list[str] | None = None) -> dict:
    uuids = uuids or [f"GPU-{i:08d}" for i in range(len(models))]
    devices = [{"index": i, "model": m, "memory_mb": memory_mb, "uuid": u}
               for i, (m, u) in enumerate(zip(models, uuids, strict=True))]
    return {"cpus": {"effective": 16}, "memory": {"effective_mb": 128_000},
            "gpus": {"devices": devices},
            "benchmark": {"device": "gpu", "gflops": gflops}, "probe_seconds": 2.0}


H100 = {"gpus": 1, "gpu_model": "NVIDIA H100 80GB HBM3", "gpu_memory_mb": 81559, "cpus": 16,
        "memory_mb": 64_000}


def test_a_real_h100_figure_passes():
    verdict = check(gpu_report(["NVIDIA H100 80GB HBM3"], 48_000), H100, ["GPU-00000000"])
    assert verdict.ok, verdict.reasons


@pytest.mark.parametrize("report, uuids, words", [
    (gpu_report(["NVIDIA A100-SXM4-80GB"], 18_000), None,
     "promises NVIDIA H100 80GB HBM3, the container has NVIDIA A100"),
    (gpu_report([], 0), None, "promises 1 GPU(s), the container has 0"),
    (gpu_report(["NVIDIA H100 80GB HBM3"], 9_000), None, "H100 80GB HBM3 gives at least"),
    (gpu_report(["NVIDIA H100 80GB HBM3"], 48_000, memory_mb=40_000), None, "a GPU has 40000"),
    (gpu_report(["NVIDIA H100 80GB HBM3"], 48_000), ["GPU-elsewhere"],
     "is not one the provider advertises"),
])
def test_spoofed_gpus_fail_with_the_reason_in_words(report, uuids, words):
    verdict = check(report, H100, uuids)
    assert not verdict.ok
    assert any(words in r for r in verdict.reasons), verdict.reasons


def test_attestation_signature_binds_the_report_to_the_provider():
    key = KeyPair.generate()
    attestation = make_attestation(gpu_report(["NVIDIA H100 80GB HBM3"], 50_000), key)
    assert verify_attestation(attestation, key.address) is None
    assert "another key" in verify_attestation(attestation, KeyPair.generate().address)
    tampered = copy.deepcopy(attestation)
    tampered["report"]["benchmark"]["gflops"] = 90_000
    assert "does not match its digest" in verify_attestation(tampered, key.address)
    forged = {**attestation, "signature": KeyPair.generate().sign(b"x").hex()}
    assert "signature is invalid" in verify_attestation(forged, key.address)


# --- `walnut-provider benchmark`: the provider's own signed report ------------------------

def test_benchmark_command_signs_and_publishes_the_report(tmp_path):
    import subprocess
    import sys

    from jupyter_walnut.ledger import LocalLedger

    env = {**os.environ, "WALNUT_LEDGER": str(tmp_path / "ledger.sqlite")}
    cli = [sys.executable, "-m", "jupyter_walnut.provider.cli", "--home", str(tmp_path / "p")]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], capture_output=True, text=True, env=env,
                              timeout=120)

    assert run("init", "--name", "bench-node").returncode == 0
    refused = run("benchmark", "--seconds", "0.3", "--publish")
    assert refused.returncode == 1 and "walnut-provider register" in refused.stderr
    key = KeyPair.load(tmp_path / "p" / "identity.key")
    with LocalLedger(tmp_path / "ledger.sqlite") as ledger:
        ledger.register_provider(key, endpoint="https://127.0.0.1:8765",
                                 tls_fingerprint="11" * 32, specs='{"region": "lab"}',
                                 price_per_second_mist=PRICE)

    done = run("benchmark", "--seconds", "0.3", "--publish")

    assert done.returncode == 0, done.stderr
    assert "GFLOP/s float32 matmul on cpu" in done.stdout
    assert f"CPUs      {HOST_CPUS}" in done.stdout
    with LocalLedger(tmp_path / "ledger.sqlite") as ledger:
        [entry] = ledger.list_providers()
    specs = json.loads(entry.specs)
    assert specs["region"] == "lab"  # the other specs are kept
    attestation = specs["attestation"]
    assert verify_attestation(attestation, key.address) is None
    assert attestation == json.loads((tmp_path / "p" / "attestation.json").read_text())
    assert attestation["report"]["cpus"]["effective"] == HOST_CPUS


def test_an_image_without_numpy_is_judged_on_counts_with_a_warning():
    report = {"cpus": {"effective": 2}, "memory": {"effective_mb": 4096},
              "gpus": {"devices": []},
              "benchmark": {"device": "none", "error": "neither numpy nor a GPU library"}}
    verdict = check(report, {"gpus": 0, "cpus": 2, "memory_mb": 2048})
    assert verdict.ok
    assert any("benchmark was skipped" in w for w in verdict.warnings)


def test_gpus_are_read_through_nvidia_smi_without_the_nvml_binding(tmp_path, monkeypatch):
    import sys

    from jupyter_walnut.common import probe

    smi = tmp_path / "nvidia-smi"  # what nvidia-smi prints for these query flags
    smi.write_text("#!/bin/sh\necho '0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559'\n"
                   "echo '1, GPU-bbbb, NVIDIA H100 80GB HBM3, 81559'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError

    found = probe.gpus()

    assert found["devices"] == [{"index": 1, "uuid": "GPU-bbbb",
                                 "model": "NVIDIA H100 80GB HBM3", "memory_mb": 81559}]
