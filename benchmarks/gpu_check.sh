#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU machine (no Docker, no network):
#
#   bash benchmarks/gpu_check.sh "$OUT"           # device call with carry: [".gpu-wheels"]
#   bash benchmarks/gpu_check.sh --dry-run-cpu DIR  # here: every step without the GPU
#
# Makes a virtualenv that sees the machine's torch, CUDA and nvidia-ml-py
# (--system-site-packages), installs jupyter-walnut's dependencies offline from .gpu-wheels/
# (made by benchmarks/gpu_wheels.sh) and jupyter-walnut itself from this checkout with
# --no-deps, then runs benchmarks/gpu_check.py, which writes RESULTS-gpu.md into the output
# folder and exits non-zero when a check failed. The dry run uses the current Python.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dry=()
if [[ "${1:-}" == "--dry-run-cpu" ]]; then
    dry=(--dry-run-cpu)
    shift
fi
out="${1:-$root/benchmarks}"
mkdir -p "$out"

# the GPU machine's Python is 3.12, the version of the carried wheels
base="${PYTHON:-$(command -v python3.12 || command -v python3)}"
if (( ${#dry[@]} )); then
    python="$base"
else
    wheels="${WALNUT_GPU_WHEELS:-$root/.gpu-wheels}"
    if [[ ! -d "$wheels" ]]; then
        echo "gpu_check: $wheels is missing: run benchmarks/gpu_wheels.sh first and carry it" >&2
        exit 2
    fi
    venv="${WALNUT_GPU_VENV:-/tmp/walnut-gpu-venv}"
    # offline: only the carried wheels, and none of this machine's pip settings
    export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels" \
        PIP_DISABLE_PIP_VERSION_CHECK=1
    python="$venv/bin/python"
    if ! "$base" -m venv --system-site-packages "$venv"; then
        # a Python without ensurepip: a bare venv, and pip from its own carried wheel
        "$base" -m venv --clear --system-site-packages --without-pip "$venv"
        pip_wheel="$(ls "$wheels"/pip-*.whl | head -1)"
        "$python" "$pip_wheel/pip" install --quiet "$pip_wheel"
    fi
    mapfile -t requirements < <("$python" "$root/benchmarks/gpu_requirements.py")
    "$python" -m pip install --quiet "${requirements[@]}"
    # the labextension is not built here and the check needs no Lab UI
    SKIP_JUPYTER_BUILDER=1 "$python" -m pip install --quiet --no-deps "$root"
fi

cd "$root"
PYTHONUNBUFFERED=1 "$python" benchmarks/gpu_check.py "${dry[@]}" "$out" 2>&1 \
    | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
