"""The batch-job runner inside a Walnut session: `python jobs.py JOB_DIR`.

The provider copies this file into the job directory and starts it from a control kernel
of the session, so it runs with the session's Python and GPUs and needs only the standard
library plus nbclient/nbformat for notebooks. It is self-contained on purpose: an image
built before a change still runs the provider's current runner.

JOB_DIR/.walnut/job.json    {"id", "kind": "notebook"|"script", "entry", "attempt",
                             "cell_timeout_s"}
JOB_DIR/.walnut/progress.json   written atomically as the job goes:
    {"state": "running"|"succeeded"|"failed", "cell": k, "cells": n, "started_at",
     "updated_at", "error", "retryable", "metrics"}
JOB_DIR/outputs/            where the job writes its results ($WALNUT_JOB_OUTPUT)
JOB_DIR/.walnut/{executed.ipynb, stdout.txt, stderr.txt, metrics.json}

A notebook records metrics by writing outputs/metrics.json, by displaying a
`application/vnd.walnut.metrics+json` bundle, or with `record(name=value)` below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

METRICS_MIME = "application/vnd.walnut.metrics+json"


def record(**metrics: object) -> None:
    """Merge metrics into $WALNUT_JOB_OUTPUT/metrics.json (for code running in a job)."""
    out = Path(os.environ.get("WALNUT_JOB_OUTPUT", "outputs"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(metrics)
    path.write_text(json.dumps(data, default=str))


class Runner:
    def __init__(self, job_dir: Path) -> None:
        self.dir = job_dir.resolve()
        self.meta_dir = self.dir / ".walnut"
        self.job = json.loads((self.meta_dir / "job.json").read_text())
        self.outputs = self.dir / "outputs"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.state = {"state": "running", "cell": 0, "cells": 0, "started_at": time.time(),
                      "updated_at": time.time(), "error": "", "retryable": False,
                      "metrics": {}, "pid": os.getpid()}

    def write_progress(self, **changes: object) -> None:
        self.state.update(changes, updated_at=time.time())
        tmp = self.meta_dir / "progress.json.tmp"
        tmp.write_text(json.dumps(self.state, default=str))
        os.replace(tmp, self.meta_dir / "progress.json")  # readers never see half a file

    def environment(self) -> None:
        os.environ.update(WALNUT_JOB_ID=str(self.job["id"]),
                          WALNUT_JOB_ATTEMPT=str(self.job.get("attempt", 1)),
                          WALNUT_JOB_OUTPUT=str(self.outputs))
        os.chdir(self.dir)

    def run(self) -> int:
        self.environment()
        self.write_progress()
        try:
            if self.job["kind"] == "notebook":
                self.run_notebook()
            else:
                self.run_script()
        except SystemExit:
            self.write_progress(state="failed", error="the job was stopped", retryable=False)
        except Exception as exc:  # the runner's own failure, reported like the job's
            self.write_progress(state="failed", error=f"runner: {type(exc).__name__}: {exc}",
                                retryable=True)
        metrics = self.collect_metrics()
        self.write_progress(metrics=metrics, state=self.state["state"] if
                            self.state["state"] != "running" else "succeeded")
        return 0 if self.state["state"] == "succeeded" else 1

    def run_notebook(self) -> None:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        nb = nbformat.read(self.dir / self.job["entry"], as_version=4)
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        position = {cell_index: k for k, cell_index in enumerate(code, start=1)}
        self.write_progress(cells=len(code))

        def started(cell, cell_index, **_):
            self.write_progress(cell=position.get(cell_index, 0))

        def completed(cell, cell_index, **_):
            self.save_notebook(nb)  # partial results survive a crash of the next cell

        client = NotebookClient(
            nb, timeout=self.job.get("cell_timeout_s"), kernel_name="python3",
            resources={"metadata": {"path": str(self.dir)}},
            on_cell_start=started, on_cell_complete=completed)
        try:
            client.execute()
            self.write_progress(state="succeeded", cell=len(code))
        except DeadKernelError:
            self.write_progress(state="failed", retryable=True,
                                error=f"the kernel died in cell {self.state['cell']}")
        except CellTimeoutError:
            self.write_progress(state="failed", error=f"cell {self.state['cell']} timed out")
        except CellExecutionError as exc:
            self.write_progress(state="failed", error=_short_error(exc, self.state["cell"]))
        finally:
            self.save_notebook(nb)

    def save_notebook(self, nb) -> None:
        import nbformat

        nbformat.write(nb, self.meta_dir / "executed.ipynb")
        out = {"stdout": [], "stderr": []}
        for cell in nb.cells:
            for o in cell.get("outputs", []):
                if o.get("output_type") == "stream":
                    out.setdefault(o.get("name", "stdout"), []).append(o.get("text", ""))
        for name in ("stdout", "stderr"):
            (self.meta_dir / f"{name}.txt").write_text("".join(out[name]))

    def run_script(self) -> None:
        self.write_progress(cells=1, cell=1)
        with open(self.meta_dir / "stdout.txt", "wb") as out, \
                open(self.meta_dir / "stderr.txt", "wb") as err:
            proc = subprocess.Popen([sys.executable, self.job["entry"]], stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL, cwd=self.dir)
            signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
            code = proc.wait()
        if code == 0:
            self.write_progress(state="succeeded")
        elif code < 0:
            self.write_progress(state="failed", retryable=code == -signal.SIGKILL,
                                error=f"the script was killed by signal {-code}")
        else:
            self.write_progress(state="failed", error=f"the script exited with code {code}")

    def collect_metrics(self) -> dict:
        metrics: dict = {}
        path = self.outputs / "metrics.json"
        if path.exists():
            try:
                metrics.update(json.loads(path.read_text()))
            except ValueError:
                pass
        executed = self.meta_dir / "executed.ipynb"
        if executed.exists():
            for cell in json.loads(executed.read_text()).get("cells", []):
                for o in cell.get("outputs", []):
                    data = o.get("data", {}).get(METRICS_MIME)
                    if isinstance(data, dict):
                        metrics.update(data)
        (self.meta_dir / "metrics.json").write_text(json.dumps(metrics, default=str))
        return metrics


def _short_error(exc: Exception, cell: int) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", "")
    return f"cell {cell}: {ename}: {evalue}".strip()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: jobs.py JOB_DIR", file=sys.stderr)
        return 2
    # SIGTERM (session stop) unwinds through nbclient, which then stops its kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return Runner(Path(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
