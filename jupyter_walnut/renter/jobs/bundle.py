"""What a job sends: its entry notebook or script and input files, with parameters
injected papermill-style into notebooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...common.errors import BadRequest

MAX_INPUT_BYTES = 8 * 1024 * 1024  # the provider takes 12 MiB of base64 per job


class BundleError(BadRequest, ValueError):
    """The job's files cannot be sent; one line for the user."""


def kind_of(entry: Path) -> str:
    if entry.suffix == ".ipynb":
        return "notebook"
    if entry.suffix == ".py":
        return "script"
    raise BundleError(f"{entry.name}: a job is a notebook (.ipynb) or a script (.py)")


def collect(entry: Path, files: list[Path]) -> dict[str, bytes]:
    """{relative path: bytes}: the entry under its name, inputs relative to the entry's
    folder (or by name when outside it), folders recursively."""
    entry = Path(entry)
    if not entry.is_file():
        raise BundleError(f"no such file: {entry}")
    base = entry.parent.resolve()
    out = {entry.name: entry.read_bytes()}
    for f in files:
        f = Path(f)
        if not f.exists():
            raise BundleError(f"no such input file: {f}")
        paths = [p for p in f.rglob("*") if p.is_file()] if f.is_dir() else [f]
        for p in paths:
            resolved = p.resolve()
            try:
                name = resolved.relative_to(base).as_posix()
            except ValueError:
                name = (p.relative_to(f.parent) if f.is_dir() else Path(p.name)).as_posix()
            if name.startswith((".walnut/", "outputs/")):
                raise BundleError(f"{name}: .walnut/ and outputs/ are reserved in a job")
            out[name] = p.read_bytes()
    total = sum(len(b) for b in out.values())
    if total > MAX_INPUT_BYTES:
        raise BundleError(f"job inputs are {total / 1e6:.1f} MB, over the "
                          f"{MAX_INPUT_BYTES / 1e6:.0f} MB limit; fetch large data inside "
                          "the job instead")
    return out


def parameterize(notebook: bytes, parameters: dict[str, Any]) -> bytes:
    """Papermill's convention: a cell tagged `injected-parameters` after the cell tagged
    `parameters` (or first, when there is none) assigns the values."""
    if not parameters:
        return notebook
    nb = json.loads(notebook)
    lines = ["# Parameters (injected by walnut)"]
    for name, value in parameters.items():
        if not str(name).isidentifier():
            raise BundleError(f"parameter name {name!r} is not a Python identifier")
        lines.append(f"{name} = {value!r}")
    cell = {"cell_type": "code", "execution_count": None, "id": "walnut-parameters",
            "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
            "source": "\n".join(lines) + "\n"}
    cells = [c for c in nb["cells"]
             if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    at = next((i + 1 for i, c in enumerate(cells)
               if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    cells.insert(at, cell)
    nb["cells"] = cells
    return json.dumps(nb, indent=1).encode()


def parse_value(text: str) -> Any:
    """`k=v` values: JSON when it parses (numbers, lists, true/false), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text
