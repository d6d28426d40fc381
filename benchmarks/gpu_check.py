"""One end-to-end run of Walnut on a GPU node; writes RESULTS-gpu.md, exits 1 on any FAIL.

    python benchmarks/gpu_check.py [OUTPUT_DIR]            # on the GPU machine
    python benchmarks/gpu_check.py --dry-run-cpu OUT_DIR   # every step a CPU machine can run

`benchmarks/gpu_check.sh` prepares the environment (offline, from .gpu-wheels/) and calls
this; the checks themselves live in `gpu_checks.py`, shared with tests/test_gpu.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import gpu_checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py")
    parser.add_argument("output", nargs="?", type=Path, default=Path(__file__).parent,
                        help="where RESULTS-gpu.md goes (default: benchmarks/)")
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="run every step that needs no GPU (the plumbing) on this machine")
    parser.add_argument("--workdir", type=Path,
                        help="state of the provider and renter (default: a temporary folder)")
    args = parser.parse_args(argv)
    gpu = not args.dry_run_cpu
    args.output.mkdir(parents=True, exist_ok=True)
    machine = gpu_checks.machine_info()
    for key, value in machine.items():
        print(f"{key:15} {value}", flush=True)
    if gpu and machine["gpus"].startswith("none"):
        print(f"gpu_check: no GPU found ({machine['gpus']}); use --dry-run-cpu on a CPU "
              "machine", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    title = "Walnut on a GPU node" if gpu else "Walnut GPU check, dry run on a CPU machine"
    report = args.output / "RESULTS-gpu.md"

    def save(results: gpu_checks.Results) -> None:
        machine["run"] = (f"{'GPU' if gpu else 'dry run on the CPU'}, "
                          f"{time.perf_counter() - t0:.0f} s")
        report.write_text(results.markdown(title, machine))

    results = gpu_checks.Results(on_line=save)
    with tempfile.TemporaryDirectory(prefix="walnut-gpu-check-") as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        try:
            gpu_checks.run_all(root, gpu, results)
        except Exception as exc:  # the stack did not start: say why, in the report too
            results.fail("stack", "provider and renter server", exc)
        for log in sorted((root / "logs").glob("*.log")) if results.failed else ():
            shutil.copyfile(log, args.output / log.name)  # beside the report, to see why
    save(results)
    print(f"gpu_check: {len(results.failed)} failed; report in {report}", flush=True)
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
