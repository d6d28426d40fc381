"""Run the local demo: `python -m jupyter_walnut.demo` (what `bash .ci/demo` calls).

Starts a provider (Docker runtime when an engine answers, else local processes), funds the
demo wallet on the local ledger, starts JupyterLab with Walnut, launches a session and opens
a sample notebook on its kernel. Prints the URL; Ctrl-C stops everything and settles.
With --smoke it runs the notebook headless instead, prints the cost, and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat

from ..common.keys import KeyPair
from ..common.money import format_sui
from ..common.protocol import API
from ..common.tls import fingerprint, pinned_url
from ..ledger import LocalLedger
from .notebook import demo_notebook

DEMO_FUNDS_MIST = 100 * 10**9  # 100 SUI on the local ledger
DEMO_BUDGET_MIST = 2 * 10**9  # the session's deposit: 2 SUI


def say(text: str) -> None:
    print(f"\033[1m[walnut demo]\033[0m {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"walnut demo: {what} exited early (code {proc.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"walnut demo: {what} did not come up within {timeout:.0f}s")
        time.sleep(0.2)  # polling a child process, bounded by the deadline


def http_json(url: str, token: str, method: str = "GET", body: dict | None = None,
              timeout: float = 300):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("message", exc.reason)
        except ValueError:
            message = exc.reason
        raise SystemExit(f"walnut demo: {method} {url.split('?')[0]} failed: {message}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_walnut.demo")
    parser.add_argument("--dir", type=Path, default=Path.cwd() / ".walnut-demo",
                        help="where the demo keeps its state (default: ./.walnut-demo)")
    parser.add_argument("--port", type=int, default=8888, help="JupyterLab port")
    parser.add_argument("--runtime", choices=("auto", "docker", "process"), default="auto")
    parser.add_argument("--smoke", action="store_true",
                        help="run the notebook headless, print the cost, stop (for CI)")
    args = parser.parse_args(argv)
    root: Path = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ,
           "WALNUT_HOME": str(root / "renter"),
           "WALNUT_LEDGER": str(root / "ledger.sqlite"),
           "WALNUT_PROVIDER_HOME": str(root / "provider"),
           "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
           "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
           "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)
    children: list[subprocess.Popen] = []
    logs = root / "logs"
    logs.mkdir(exist_ok=True)

    def spawn(name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        children.append(proc)
        return proc

    def stop_all() -> None:
        for proc in reversed(children):  # JupyterLab first: it stops and settles sessions
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    interrupted = False

    def on_signal(signum, frame):
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return run_demo(args, root, env, spawn)
    except KeyboardInterrupt:
        say("stopping (sessions are stopped and settled)...")
        return 0
    finally:
        stop_all()
        if not args.smoke:
            say(f"stopped. State kept in {root} (delete it to start over).")


def run_demo(args, root: Path, env: dict, spawn) -> int:
    exe = Path(sys.executable).parent
    provider_home = root / "provider"
    if not (provider_home / "identity.key").exists():
        say("creating the demo provider's identity and config")
        subprocess.run([str(exe / "walnut-provider"), "--home", str(provider_home), "init",
                        "--name", "demo-node"], env=env, check=True, stdout=subprocess.DEVNULL)
    port_file = root / "provider.port"
    port_file.unlink(missing_ok=True)
    provider = spawn("provider", [str(exe / "walnut-provider"), "--home", str(provider_home),
                                  "serve", "--port", "0", "--port-file", str(port_file),
                                  "--runtime", args.runtime, "--log-format", "text",
                                  "--stop-sessions-on-exit"])
    say("starting the provider (the first Docker run builds the gateway image: ~1-2 min)")
    wait_for("the provider", lambda: port_file.exists() and port_file.read_text(), 60, provider)
    cert = provider_home / "tls" / "cert.pem"
    pin = fingerprint(cert.read_bytes())
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    base_url = f"https://127.0.0.1:{port_file.read_text()}"
    with urllib.request.urlopen(f"{base_url}{API}/status", timeout=10,
                                context=context) as resp:
        offer = json.load(resp)
    provider_url = pinned_url(base_url, pin)  # the renter pins the provider's certificate
    say(f"provider {offer['node']} at {base_url} (runtime: {offer['runtime']}, "
        f"TLS sha256={pin[:16]}...)")

    wallet_path = root / "renter" / "wallet.key"
    key = KeyPair.load(wallet_path) if wallet_path.exists() else KeyPair.generate()
    if not wallet_path.exists():
        key.save(wallet_path)
    with LocalLedger(root / "ledger.sqlite") as ledger:
        if ledger.balance(key.address) < DEMO_BUDGET_MIST:
            ledger.fund(key.address, DEMO_FUNDS_MIST)
        say(f"demo wallet {key.address[:10]}... holds {format_sui(ledger.balance(key.address))}"
            " on the local ledger")

    notebooks = root / "notebooks"
    notebooks.mkdir(exist_ok=True)
    token = secrets.token_hex(24)
    env["WALNUT_PROVIDERS"] = provider_url
    port = args.port if not args.smoke else free_port()
    if not args.smoke and _port_busy(port):
        port = free_port()
    lab = spawn("jupyterlab", [
        str(exe / "jupyter"), "lab", "--no-browser", "--allow-root", f"--port={port}",
        "--ip=127.0.0.1", f"--ServerApp.token={token}", f"--ServerApp.root_dir={notebooks}",
        "--WalnutApp.challenge_period=120",
    ])
    base = f"http://127.0.0.1:{port}"

    def lab_ready():
        try:
            return http_json(f"{base}/walnut/status", token, timeout=5)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    say("starting JupyterLab")
    wait_for("JupyterLab", lab_ready, 120, lab)

    say("launching a Walnut session (opens a payment channel, starts the session gateway)")
    shape = offer["shapes"][0]["name"]
    session = http_json(f"{base}/walnut/sessions", token, "POST",
                        {"provider_url": provider_url, "shape": shape,
                         "budget_mist": DEMO_BUDGET_MIST})
    say(f"session {session['id']} running on {session['node']} ({shape}); "
        f"deposit {format_sui(session['budget_mist'])}")
    nb_path = notebooks / "walnut-demo.ipynb"
    nbformat.write(demo_notebook(session["kernel_name"],
                                 f"Python 3 — walnut: {session['node']}"), nb_path)
    if args.smoke:
        return smoke(exe, env, nb_path, session, base, token, format_sui)

    url = f"{base}/lab/tree/walnut-demo.ipynb?token={token}"
    say("ready. Open this URL in your browser (Ctrl-C here stops everything):")
    print(f"\n    {url}\n", flush=True)
    while lab.poll() is None:
        time.sleep(1)
    return 0


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def smoke(exe: Path, env: dict, nb_path: Path, session: dict, base: str, token: str,
          format_sui) -> int:
    """Run the notebook on the session's kernel (nbconvert uses the walnut provisioner)."""
    say("running the notebook headless on the remote kernel")
    done = subprocess.run([str(exe / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                           "--inplace", str(nb_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                print(out["text"], end="")
            elif "image/png" in out.get("data", {}):
                print("[a plot: image/png]")
    stopped = http_json(f"{base}/walnut/sessions/{session['id']}", token, "DELETE")
    say(f"session stopped after {stopped['running_seconds']}s; "
        f"cost {format_sui(stopped['cost_mist'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
