"""`binder/start` (what mybinder.org runs before JupyterLab), without repo2docker.

It must start a local provider and fund a demo wallet on the local ledger, hand both to the
command it execs, and stop the provider once that command exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
START = ROOT / "binder" / "start"

# Runs inside `binder/start`: what the renter side (the server extension) would see.
CHECK = """
import asyncio, json, os
from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LocalLedger, default_ledger_path, walnut_home
from jupyter_walnut.renter.provider_client import ProviderClient

url = os.environ["WALNUT_PROVIDERS"]
key = KeyPair.load(walnut_home() / "wallet.key")
status = asyncio.run(ProviderClient(url, key).status())
with LocalLedger(default_ledger_path()) as ledger:
    balance = ledger.balance(key.address)
print("CHECK " + json.dumps({"url": url, "node": status["node"], "runtime": status["runtime"],
                             "shapes": [s["name"] for s in status["shapes"]],
                             "balance_mist": balance}))
"""


def binder_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WALNUT_", "JUPYTER_"))}
    env["HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True  # exited, not yet reaped by its new parent
        except (FileNotFoundError, IndexError):
            return True
        time.sleep(0.2)
    return False


def answers(url: str) -> bool:
    host, port = url.split("://")[1].split("#")[0].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port))) == 0


def test_start_runs_a_provider_and_a_funded_wallet_then_cleans_up(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "repo"
    work.mkdir()
    done = subprocess.run(["bash", str(START), sys.executable, "-c", CHECK], cwd=work,
                          env=binder_env(home), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("CHECK "))
    seen = json.loads(line[len("CHECK "):])
    assert seen["node"] == "binder-node"
    assert seen["runtime"] == "process"  # Binder has no Docker engine
    assert seen["shapes"]
    assert seen["balance_mist"] == 100 * 10**9  # the demo wallet: 100 SUI on the local ledger
    assert "demo wallet:" in done.stderr and "100 SUI" in done.stderr

    demo = home / ".walnut-demo"
    assert (work / "walnut-demo.ipynb").exists()  # the demo notebook beside the repo
    # the command has exited: the watchdog stops the provider and removes its traces
    deadline = time.monotonic() + 60
    while (demo / "provider.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (demo / "provider.pid").exists(), (demo / "logs" / "watchdog.log").read_text()
    assert not answers(seen["url"])
    log = (demo / "logs" / "provider.log").read_text()
    assert "serving binder-node" in log

    # a second start (a restarted container keeps its home) reuses identity and wallet
    again = subprocess.run(["bash", str(START), sys.executable, "-c", CHECK], cwd=work,
                           env=binder_env(home), capture_output=True, text=True, timeout=150)
    assert again.returncode == 0, again.stderr[-3000:]
    seen2 = json.loads(next(x for x in again.stdout.splitlines()
                            if x.startswith("CHECK "))[len("CHECK "):])
    assert seen2["balance_mist"] == seen["balance_mist"]
    assert seen2["node"] == "binder-node"


def test_jupyterlab_under_start_offers_the_local_provider_and_stops_it_on_sigterm(tmp_path):
    """The Binder path: start execs JupyterLab; Binder's SIGTERM ends it and the provider."""
    home = tmp_path / "home"
    home.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "binder-test-token"
    log = open(tmp_path / "lab.log", "wb")  # noqa: SIM115 - closed below
    lab = subprocess.Popen(
        ["bash", str(START), "jupyter", "lab", "--no-browser", "--allow-root",
         f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.token={token}"],
        cwd=tmp_path, env=binder_env(home), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def get(path: str):
        req = urllib.request.Request(base + path, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            return json.load(resp)

    try:
        deadline = time.monotonic() + 120
        while True:
            assert lab.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            try:
                get("/walnut/status")
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "lab.log").read_text()[-3000:]
                time.sleep(0.5)
        offers = get("/walnut/offers")["offers"]
        assert offers and all(o["healthy"] for o in offers), offers
        assert {o["node"] for o in offers} == {"binder-node"}
        assert get("/walnut/wallet")["balance_mist"] == 100 * 10**9
        provider_pid = int((home / ".walnut-demo" / "provider.pid").read_text())
    finally:
        lab.send_signal(signal.SIGTERM)
        lab.wait(60)
        log.close()
    assert gone(provider_pid), "the provider outlived JupyterLab"
