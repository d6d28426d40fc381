#!/usr/bin/env bash
# Download every wheel the GPU check needs into .gpu-wheels/ (run here, with the network).
#
# The GPU machine has Python 3.12 with torch, CUDA and nvidia-ml-py but no network at all,
# so `benchmarks/gpu_check.sh` installs offline from this folder, which travels with the
# device call as `carry: [".gpu-wheels"]` (64 MiB in all, the repository included).
# Resolved for CPython 3.12 manylinux x86_64: the provider, the renter's Jupyter Server with
# the Walnut extension, and the build backend that installs jupyter-walnut from the
# checkout. No JupyterLab (the check drives the server's REST API) and no torch (the GPU
# machine's own is used through --system-site-packages).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/.gpu-wheels}"
python="${PYTHON:-python3}"
# the GPU machine's Python; another version only to try the offline install elsewhere
pyver="${WALNUT_WHEELS_PYTHON:-3.12}"
abi="cp${pyver/./}"
limit_mib=48  # well under the 64 MiB a device call may carry, the checkout included

# the runtime dependencies come from pyproject.toml, so this list is never written twice
mapfile -t requirements < <("$python" "$root/benchmarks/gpu_requirements.py")
# the build backend named in [build-system], for `pip install --no-deps .` offline
build=("hatchling>=1.21" "hatch-jupyter-builder>=0.9" "jupyter-builder>=1.2")
# pip itself, for a Python whose venv module cannot install it (no ensurepip)
build+=("pip")

rm -rf "$out"
mkdir -p "$out"
"$python" -m pip download --quiet \
    --only-binary=:all: --python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 \
    --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform linux_x86_64 --platform any \
    -d "$out" "${requirements[@]}" "${build[@]}"

size_mib=$(( $(du -sb "$out" | cut -f1) / 1024 / 1024 ))
count=$(find "$out" -name '*.whl' | wc -l)
echo "gpu_wheels: $count wheels, $size_mib MiB in $out"
if (( size_mib >= limit_mib )); then
    echo "gpu_wheels: $size_mib MiB is over the $limit_mib MiB budget for a device call" >&2
    exit 1
fi
