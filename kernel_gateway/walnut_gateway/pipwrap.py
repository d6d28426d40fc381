"""`pip` and `conda` inside a session: the session env's pip, with Walnut's own words.

`pip ...` (a terminal, `!pip`, `%pip`) runs `python -m pip` of the session env. When the
provider's egress policy is `offline`, a failed install ends with one message that says why
and what works instead; without a provider's index pip looks at local files only (no minutes
of retries and DNS timeouts before the same failure).
Sessions have no conda: `conda`, `mamba` and `micromamba` say so and point at `%pip`.
"""

from __future__ import annotations

import os
import subprocess
import sys

NETWORK_COMMANDS = {"install", "download", "wheel", "index", "search"}
CONDA_MESSAGE = (
    "Walnut sessions have no conda: this session's Python is a pip environment of its own "
    "(layered over the image's packages). Install with `%pip install PACKAGE` instead, "
    "or give the launch requirements so the provider prepares them before the kernel starts.")
OFFLINE_MESSAGE = (
    "Walnut: this provider's egress policy is `offline`, so the session cannot reach the "
    "network{cache}. Give the packages as requirements at launch (`%walnut launch "
    "--requirements FILE`: the provider prepares them from its package cache before the "
    "kernel starts), install a wheel file you upload (`%pip install --no-index "
    "./file.whl`), or choose a provider whose egress is `internet`.")
NO_INDEX = " and pip cannot download packages"
FROM_CACHE = " and pip installs only what the provider's package cache ($PIP_INDEX_URL) serves"


def offline(environ: dict[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get("WALNUT_EGRESS") == "offline"


def offline_message(environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return OFFLINE_MESSAGE.format(cache=FROM_CACHE if environ.get("PIP_INDEX_URL") else NO_INDEX)


def needs_network(args: list[str]) -> bool:
    command = next((a for a in args if not a.startswith("-")), "")
    return command in NETWORK_COMMANDS and "--no-index" not in args


def run_pip(args: list[str]) -> int:
    env = dict(os.environ)
    cut_off = offline(env) and needs_network(args)
    if cut_off and not env.get("PIP_INDEX_URL"):
        # no index can answer: pip looks at local files only, instead of minutes of retries
        # and DNS timeouts before the same failure
        env["PIP_NO_INDEX"] = "1"
    sys.stdout.flush()
    code = subprocess.call([sys.executable, "-m", "pip", *args], env=env)
    if code != 0 and cut_off:
        print(offline_message(env), file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--conda"]:
        print(CONDA_MESSAGE, file=sys.stderr)
        return 1
    return run_pip(args)


if __name__ == "__main__":
    sys.exit(main())
