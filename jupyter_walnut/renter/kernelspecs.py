"""Kernelspecs for running Walnut sessions, written where every Jupyter client looks.

Each running session adds `walnut-<session>` to the user's kernelspec directory; its
metadata selects the `walnut` kernel provisioner. The spec disappears when the session ends.

One more spec stays while the extension is on: `walnut-new`, "New Walnut kernel…", the entry
of the kernel picker and the launcher (issue #21). It starts nothing: in JupyterLab the
labextension catches the choice and opens the offers view; any other client gets the
`walnut-picker` provisioner's one-line refusal (kernel/picker.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from .store import RenterSession, kernel_name

PICKER_KERNEL = "walnut-new"  # never a session's: those are walnut-s-…
PICKER_DISPLAY_NAME = "New Walnut kernel…"


def kernels_dir() -> Path:
    return Path(jupyter_data_dir()) / "kernels"


def display_name(s: RenterSession) -> str:
    hw = f"{s.gpus}x {s.gpu_model}" if s.gpus and s.gpu_model else f"{s.cpus:g} CPU"
    return f"Python 3 — walnut: {s.node} · {hw}"


def write_kernelspec(s: RenterSession, remote_kernel: str = "python3") -> Path:
    spec_dir = kernels_dir() / kernel_name(s.id)
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        # never executed: the provisioner starts the kernel on the provider
        "argv": ["python", "-m", "jupyter_walnut.renter.kernel.placeholder", "{connection_file}"],
        "display_name": display_name(s),
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "walnut",
                "config": {"walnut_session": s.id, "remote_kernel_name": remote_kernel},
            },
            "walnut": {"session": s.id, "node": s.node, "provider": s.provider_url},
            "debugger": True,
        },
    }
    return _write_spec(spec_dir, spec)


def remove_kernelspec(session_id: str) -> None:
    shutil.rmtree(kernels_dir() / kernel_name(session_id), ignore_errors=True)


def write_picker_kernelspec() -> Path:
    """The kernel picker's "New Walnut kernel…" entry (rewritten at each server start)."""
    spec_dir = kernels_dir() / PICKER_KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        # never executed: the `walnut-picker` provisioner refuses before any launch
        "argv": ["python", "-m", "jupyter_walnut.renter.kernel.placeholder", "{connection_file}"],
        "display_name": PICKER_DISPLAY_NAME,
        "language": "python",
        "metadata": {
            "kernel_provisioner": {"provisioner_name": "walnut-picker"},
            # what the labextension recognises: choosing this opens the offers view
            "walnut": {"picker": True},
        },
    }
    return _write_spec(spec_dir, spec)


def remove_picker_kernelspec() -> None:
    shutil.rmtree(kernels_dir() / PICKER_KERNEL, ignore_errors=True)


def _write_spec(spec_dir: Path, spec: dict) -> Path:
    """kernel.json replaced whole: a client listing specs never reads half of one."""
    tmp = spec_dir / "kernel.json.tmp"
    tmp.write_text(json.dumps(spec, indent=1))
    tmp.replace(spec_dir / "kernel.json")
    return spec_dir
