"""`pip` and `conda` inside a session: the session env's pip, with Walnut's own words.

`pip ...` (a terminal, `!pip`, `%pip`) runs `python -m pip` of the session env. When the
provider's egress policy is `offline` and it gave no package index, an install cannot reach
any index: pip's retries are cut short and one message says why and what works instead.
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
    "network and pip cannot download packages. Give the packages as requirements at launch "
    "(`%walnut launch --requirements FILE`: the provider installs them from its package "
    "cache before the kernel starts), install a wheel file you upload (`%pip install "
    "--no-index ./file.whl`), or choose a provider whose egress is `internet`.")


def offline_without_index(environ: dict[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get("WALNUT_EGRESS") == "offline" and not environ.get("PIP_INDEX_URL")


def needs_network(args: list[str]) -> bool:
    command = next((a for a in args if not a.startswith("-")), "")
    return command in NETWORK_COMMANDS and "--no-index" not in args


def run_pip(args: list[str]) -> int:
    env = dict(os.environ)
    offline = offline_without_index(env) and needs_network(args)
    if offline:  # nothing answers: no point in pip's five retries with back-off
        env.setdefault("PIP_RETRIES", "0")
        env.setdefault("PIP_TIMEOUT", "5")
    sys.stdout.flush()
    code = subprocess.call([sys.executable, "-m", "pip", *args], env=env)
    if code != 0 and offline:
        print(OFFLINE_MESSAGE, file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--conda"]:
        print(CONDA_MESSAGE, file=sys.stderr)
        return 1
    return run_pip(args)


if __name__ == "__main__":
    sys.exit(main())
