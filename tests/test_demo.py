"""The README's demo, headless: provider + ledger + JupyterLab + a notebook on a Walnut kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(600)


def test_demo_smoke_runs_the_notebook_remotely_and_reports_the_cost(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jupyter_walnut.demo", "--smoke", "--runtime", "process",
         "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "session      : s-" in out  # the notebook ran inside the Walnut session
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.9  # a real model was trained
    assert "[a plot: image/png]" in out
    assert "session stopped after" in out and "cost 0." in out
