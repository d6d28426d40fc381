"""Requirements for a launch (issue #15), as the renter gathers them: a file, a text, or
"what this notebook imports, at my local versions".

The provider installs them in the session's environment before it hands the kernel over
(POST /sessions `requirements`, contract C4). They are checked here first, by the same
rules the provider applies (common/requirements.py), so that a bad file is refused before
any money moves: no channel is opened for a launch the provider would refuse.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib import metadata
from pathlib import Path

from ..common.requirements import MAX_REQUIREMENTS_BYTES, RequirementsError, parse_requirements

# the packages a kernel already runs on: pinning them to the renter's versions could
# replace the session's kernel under it
KERNEL_PACKAGES = frozenset({"IPython", "ipykernel", "jupyter_client", "jupyter_core",
                             "traitlets", "tornado", "zmq", "jupyter_walnut"})


def check_requirements(text: str) -> str:
    """The text as it is sent, once each line is one plain requirement (or a comment)."""
    parse_requirements(text)
    return text


def read_requirements_file(path: str | Path) -> str:
    """A requirements file's checked text, or a one-line RequirementsError saying why not."""
    path = Path(path).expanduser()
    try:
        if path.stat().st_size > MAX_REQUIREMENTS_BYTES:
            raise RequirementsError(f"{path} is larger than {MAX_REQUIREMENTS_BYTES // 1024} "
                                    "KiB")
        data = path.read_bytes()
    except OSError as exc:
        raise RequirementsError(f"cannot read requirements file {path}: "
                                f"{exc.strerror or exc}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise RequirementsError(f"{path} is not UTF-8 text") from None
    return check_requirements(text)


# --- "what this notebook imports" ---------------------------------------------------------

def _python_lines(source: str) -> str:
    """A cell's source without IPython syntax (magics, shell escapes, `x = !ls`, `obj?`),
    which is not Python; the lines are kept (empty) so that nothing else moves."""
    if source.lstrip().startswith("%%"):
        return ""  # a cell magic: its body is another language, or runs elsewhere
    lines = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith(("%", "!", "?")) or re.match(r"^[\w.,\s]+=\s*[!%]", stripped) \
                or stripped.endswith("?"):
            lines.append("")
        else:
            lines.append(line)
    return "\n".join(lines)


def source_imports(source: str) -> set[str]:
    """The top-level modules a piece of notebook code imports (absolute imports only)."""
    try:
        tree = ast.parse(_python_lines(source))
    except SyntaxError:
        return set()  # a cell that does not parse runs nowhere: it needs nothing
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def notebook_sources(notebook: dict) -> list[str]:
    """The code cells' sources of a notebook (nbformat 4 JSON, as read from the file)."""
    sources = []
    for cell in notebook.get("cells") or []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        sources.append("".join(source) if isinstance(source, list) else str(source))
    return sources


def third_party(modules: set[str]) -> set[str]:
    """Drop the standard library, the kernel's own packages and Walnut itself."""
    return {m for m in modules if m not in sys.stdlib_module_names
            and m not in KERNEL_PACKAGES and not m.startswith("_")}


def pinned_requirements(modules: set[str]) -> str:
    """`name==version` of the distributions providing these modules here, one a line; the
    modules not installed here are named in a comment (nothing to pin them to)."""
    providers = metadata.packages_distributions()
    pins: dict[str, str] = {}
    missing = []
    for module in sorted(third_party(modules)):
        names = providers.get(module)
        if not names:
            missing.append(module)
            continue
        for name in names:
            canonical = re.sub(r"[-_.]+", "-", name).lower()
            if canonical in ("jupyter-walnut",) or canonical in pins:
                continue
            try:
                pins[canonical] = f"{canonical}=={metadata.version(name)}"
            except metadata.PackageNotFoundError:
                missing.append(module)
    lines = [pins[k] for k in sorted(pins)]
    if missing:
        lines.append("# imported but not installed here: " + ", ".join(sorted(set(missing))))
    return "\n".join(lines) + ("\n" if lines else "")


def requirements_from_sources(sources: list[str]) -> str:
    modules: set[str] = set()
    for source in sources:
        modules |= source_imports(source)
    return check_requirements(pinned_requirements(modules))


def requirements_from_notebook(path: str | Path) -> str:
    """The requirements a notebook file's imports need, at the versions installed here."""
    path = Path(path).expanduser()
    try:
        notebook = json.loads(path.read_bytes())
    except OSError as exc:
        raise RequirementsError(f"cannot read notebook {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError):
        raise RequirementsError(f"{path} is not a notebook (not JSON)") from None
    if not isinstance(notebook, dict):
        raise RequirementsError(f"{path} is not a notebook")
    return requirements_from_sources(notebook_sources(notebook))
