"""The prepared GPU check keeps working: its dry run on this CPU machine (the provider,
the renter's Jupyter Server, session launch, the kernel path, the CPU-only session, the
lying offers and the report) passes, and a failed check makes it exit non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_checks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("1 detection", "2 isolation", "3 verification", "4 training", "5 figures")


def test_the_dry_run_passes_every_step_a_cpu_machine_can_run(tmp_path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run-cpu",
                           str(out)], env=env, capture_output=True, text=True, timeout=240)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = (out / "RESULTS-gpu.md").read_text()
    assert "| FAIL |" not in report
    for name in CHECKS:
        assert f"| {name} |" in report, name
    assert "claims two GPUs: refusal | verification failed" in report
    assert "claims a bigger card: paid (MIST)" in report
    assert "loss curve vs the same run locally" in report
    assert (out / "gpu_check.log").read_text().count("PASS") >= 10


def test_a_failed_check_fails_the_run_and_is_reported(tmp_path, monkeypatch) -> None:
    def one_failure(root, gpu, results):
        results.add("2 isolation", "gpu-1: torch.cuda.device_count()", 2, "1", False)
        return results

    monkeypatch.setattr(gpu_checks, "run_all", one_failure)

    assert gpu_check.main(["--dry-run-cpu", str(tmp_path)]) == 1
    report = (tmp_path / "RESULTS-gpu.md").read_text()
    assert "| 2 isolation | gpu-1: torch.cuda.device_count() | 2 | 1 | FAIL |" in report


def test_a_stack_that_cannot_start_still_leaves_a_report(tmp_path, monkeypatch) -> None:
    def no_provider(root, gpu, results):
        raise RuntimeError("the provider exited early (code 2)")

    monkeypatch.setattr(gpu_checks, "run_all", no_provider)

    assert gpu_check.main(["--dry-run-cpu", str(tmp_path)]) == 1
    assert "the provider exited early" in (tmp_path / "RESULTS-gpu.md").read_text()
