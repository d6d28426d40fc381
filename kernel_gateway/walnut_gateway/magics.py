"""The session kernels' `%pip` and `%conda` (loaded by the session env's IPython config).

`%pip` is IPython's, through walnut_gateway.pipwrap (the offline-egress message) and with the
import caches refreshed afterwards, so a new package imports in the same kernel at once.
`%conda`, `%mamba` and `%micromamba` say that sessions have no conda and to use `%pip`.
A local notebook never loads this: only the session env's config names it.
"""

from __future__ import annotations

import importlib
import shlex
import sys

from .pipwrap import CONDA_MESSAGE


def _pip(line: str) -> None:
    from IPython import get_ipython

    shell = get_ipython()
    python = shlex.quote(sys.executable)
    shell.system(f"{python} -m walnut_gateway.pipwrap {line}")
    importlib.invalidate_caches()
    if line.split()[:1] == ["install"] and shell.user_ns.get("_exit_code") == 0:
        print("Note: new packages import at once; a package this kernel had already imported "
              "needs a kernel restart to use the new version.")


def _conda(line: str) -> None:
    print(CONDA_MESSAGE, file=sys.stderr)


def load_ipython_extension(ipython) -> None:
    ipython.register_magic_function(_pip, "line", "pip")
    for name in ("conda", "mamba", "micromamba"):
        ipython.register_magic_function(_conda, "line", name)
    # `!pip install x` goes around %pip: refresh the import caches after every cell
    ipython.events.register("post_run_cell", lambda *_: importlib.invalidate_caches())
