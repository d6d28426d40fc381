"""Print the runtime requirements of jupyter-walnut that the GPU check installs, one a line.

Read from pyproject.toml so the list is written once: the base dependencies and the
`provider` extra (the check runs a provider node too). JupyterLab is left out: the check
drives the renter's Jupyter Server through its REST API and needs no Lab UI.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements() -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    deps = [*project["dependencies"], *project["optional-dependencies"]["provider"]]
    return [dep for dep in deps if not re.match(r"jupyterlab\b", dep)]


if __name__ == "__main__":
    sys.stdout.write("".join(f"{dep}\n" for dep in requirements()))
