"""A real GPU, end to end, with the checks `benchmarks/gpu_check.py` runs (one copy of them).

The `gpu` tests need an NVIDIA GPU with its driver, torch and nvidia-ml-py and run with
WALNUT_GPU_TESTS=1; without one they skip naming the missing GPU. The other tests here run
everywhere: the nvidia-smi detection path, and the judge of the 16-bit tensor-core figure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gpu_checks  # noqa: E402

from jupyter_walnut.common import probe  # noqa: E402
from jupyter_walnut.common.probe_check import check  # noqa: E402
from jupyter_walnut.provider import hardware  # noqa: E402

H200 = {"gpus": 1, "gpu_model": "NVIDIA H200", "gpu_memory_mb": 143771, "cpus": 16,
        "memory_mb": 64000}


def gpu_or_skip() -> None:
    if os.environ.get("WALNUT_GPU_TESTS") != "1":
        pytest.skip("no GPU: set WALNUT_GPU_TESTS=1 on a machine with an NVIDIA GPU")
    if not hardware.detect_gpus()[0]:
        pytest.fail("WALNUT_GPU_TESTS=1 but NVML finds no GPU: "
                    f"{hardware.detect_gpus()[3]}")


def no_failures(results: gpu_checks.Results) -> list[str]:
    return [f"[{x.check}] {x.figure}: {x.value} (expected {x.expected})"
            for x in results.failed]


@pytest.mark.gpu
def test_init_detects_the_gpu_and_both_detection_paths_agree(tmp_path) -> None:
    gpu_or_skip()
    results = gpu_checks.Results(echo=None)
    home = gpu_checks.init_provider(tmp_path, dict(os.environ))

    gpu_checks.check_detection(results, home, gpu=True)

    assert not no_failures(results), no_failures(results)
    assert any(x.figure == "GPU shapes written by init" and x.ok for x in results.lines)


@pytest.mark.gpu
def test_the_whole_gpu_check_passes(tmp_path) -> None:
    """Isolation, verification (honest and lying offers), training through the renter's
    Jupyter Server with GPU usage, and the figures: every line PASS or INFO."""
    gpu_or_skip()

    results = gpu_checks.run_all(tmp_path, gpu=True, results=gpu_checks.Results(echo=None))

    assert not no_failures(results), no_failures(results)
    checks = {x.check for x in results.lines if x.ok}
    assert checks == {"1 detection", "2 isolation", "3 verification", "4 training",
                      "5 figures"}


def test_nvidia_smi_gives_the_same_figures_without_the_nvml_binding(tmp_path,
                                                                     monkeypatch) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'if [ -n "$1" ]; then echo "0, GPU-aaaa-1111, NVIDIA H200, 143771, 570.86.15"; '
        "exit 0; fi\n"
        'echo "| NVIDIA-SMI 570.86.15   Driver Version: 570.86.15   CUDA Version: 12.8 |"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError

    gpus, driver, cuda, error = hardware.detect_gpus()

    assert error is None
    assert gpus == (hardware.GPU(0, "GPU-aaaa-1111", "NVIDIA H200", 143771),)
    assert (driver, cuda) == ("570.86.15", "12.8")
    assert hardware.detect(str(tmp_path)).gpus == gpus  # what init sizes the shapes by


def test_without_nvml_or_nvidia_smi_the_node_is_cpu_only_with_the_reason(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi there
    monkeypatch.setitem(sys.modules, "pynvml", None)

    assert hardware.detect_gpus() == ((), None, None, "nvidia-ml-py is not installed")


def test_a_node_in_a_smaller_container_offers_what_its_sessions_will_see(monkeypatch) -> None:
    """A GPU slice of a big host (a pod with a CPU quota and a memory limit): init sizes the
    shapes by the limits, or every session's probe fails the offer it was sold under."""
    cgroup = {"/sys/fs/cgroup/cpu.max": "100000 100000",  # one CPU's worth of quota
              "/sys/fs/cgroup/memory.max": str(1024 * 1024 * 1024)}  # 1 GiB
    monkeypatch.setattr(probe, "_read", cgroup.get)

    hw = hardware.detect()

    assert hw.cpu_count == 1
    assert hw.memory_mb == 1024
    assert probe.cpus()["effective"] == hw.cpu_count  # what the session's probe reports
    assert probe.memory()["effective_mb"] == hw.memory_mb


def h200_report(fp32: float, bf16: float | None) -> dict:
    bench = {"device": "gpu", "gflops": fp32}
    if bf16 is not None:
        bench["tensor"] = {"dtype": "bfloat16", "gflops": bf16}
    return {"cpus": {"effective": 16}, "memory": {"effective_mb": 128000},
            "gpus": {"devices": [{"index": 0, "uuid": "GPU-0", "model": "NVIDIA H200",
                                  "memory_mb": 143771}]},
            "benchmark": bench, "probe_seconds": 2.5}


@pytest.mark.parametrize(("bf16", "ok"), [(650_000.0, True), (None, True), (120_000.0, False)])
def test_the_bf16_figure_is_judged_against_the_h200_floor(bf16, ok) -> None:
    """An H200 does ~800 bf16 TFLOP/s; a card passing fp32 but far slower at bf16 (a
    smaller GPU behind a spoofed name, or a throttled one) is caught."""
    verdict = check(h200_report(40_000.0, bf16), H200, ["GPU-0"])

    assert verdict.ok is ok, verdict.reasons
    assert verdict.expected["tensor_gflops_floor"] == pytest.approx(835_000 * 0.35)
    if not ok:
        assert "bfloat16 benchmark measured 120000 GFLOP/s" in verdict.reasons[0]
