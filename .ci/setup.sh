#!/usr/bin/env bash
# Set up everything Walnut needs on a fresh Debian machine: apt packages, the Docker engine,
# a virtualenv with the project installed. Idempotent: a second run does only what changed.
# Usage: source .ci/setup.sh   (exports WALNUT_VENV and puts it on PATH)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WALNUT_VENV="${WALNUT_VENV:-$ROOT/.venv}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf '\033[1m[walnut setup]\033[0m %s\n' "$*"; }

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
# Debian's Chromium drives the UI tests (Playwright with executable_path)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The Docker engine: start it when none answers (a provider without Docker uses processes).
if [ "${WALNUT_NO_DOCKER:-0}" != "1" ] && command -v dockerd >/dev/null; then
  if ! timeout 5 docker info >/dev/null 2>&1; then
    log "starting the Docker engine"
    mkdir -p "$ROOT/.cache"
    $SUDO setsid dockerd --host unix:///var/run/docker.sock >"$ROOT/.cache/dockerd.log" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
      timeout 5 docker info >/dev/null 2>&1 && break
      sleep 0.5
    done
    timeout 5 docker info >/dev/null 2>&1 || log "warning: the Docker engine did not start (see .cache/dockerd.log)"
  fi
fi

# The one-node Slurm cluster only for the tests (.ci/run sets WALNUT_WITH_SLURM=1), not the demo.
[ "${WALNUT_WITH_SLURM:-0}" != "1" ] || [ "${WALNUT_NO_SLURM:-0}" = "1" ] || source "$ROOT/.ci/slurm.sh" || log "error: the one-node Slurm cluster did not start (see above); tests/test_slurm_runtime.py fails under WALNUT_REQUIRE_SLURM=1"

# The labextension builds with rspack, which needs node >= 20.19.
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || log "warning: node >= 20.19 is needed to build the labextension"

# The virtualenv, reinstalled only when the project's metadata or the frontend changed.
stamp_src="$(cat "$ROOT/pyproject.toml" "$ROOT/.ci/setup.sh" "$ROOT/labextension/package.json" "$ROOT/labextension/yarn.lock" | sha256sum | cut -c1-16)"
stamp_file="$WALNUT_VENV/.walnut-stamp"
if [ ! -x "$WALNUT_VENV/bin/python" ]; then
  log "creating the virtualenv at $WALNUT_VENV"
  python3 -m venv "$WALNUT_VENV"
fi
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp_src" ]; then
  log "installing jupyter-walnut and its test tools"
  "$WALNUT_VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$WALNUT_VENV/bin/pip" install -q -e "$ROOT[test,provider,demo,docs,magics,sui]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  "$WALNUT_VENV/bin/python" -c "import jupyter_walnut" 
  # the editable install copied the built labextension once; keep it live instead
  mkdir -p "$WALNUT_VENV/share/jupyter/labextensions"
  rm -rf "$WALNUT_VENV/share/jupyter/labextensions/jupyter-walnut"
  ln -sfn "$ROOT/jupyter_walnut/labextension" "$WALNUT_VENV/share/jupyter/labextensions/jupyter-walnut"
  echo "$stamp_src" > "$stamp_file"
fi
export PATH="$WALNUT_VENV/bin:$PATH"
