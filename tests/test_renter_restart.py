"""Restart the renter's Jupyter Server: its remote kernels come back, same ids, same state.

On the default stack (a Docker session behind TLS, the renter pinning the certificate);
`WALNUT_TEST_RUNTIME=process` / `WALNUT_TEST_TLS=off` run the cheap leg.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import provider_config
from kernel_ws import KernelWS
from stack import StackNode, stack_runtime
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_walnut.common.keys import KeyPair

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp_path, provider_url: str, ledger) -> None:
        self.token = "t" + os.urandom(8).hex()
        self.port = _port()
        config_dir = tmp_path / "config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps({
            "ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [provider_url], "walnut_home": str(tmp_path / "renter"),
                          "ledger_path": str(ledger.path), "poll_interval": 0.2,
                          "challenge_period": 60, "stop_sessions_on_exit": False},
        }))
        self.env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir),
                    "JUPYTER_DATA_DIR": str(tmp_path / "data"),
                    "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
        self.root = tmp_path / "root"
        self.root.mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log = tmp_path / "server.log"  # both runs of the server, for a failure's report

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}",
             "--ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}", "--allow-root"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        deadline = time.monotonic() + 60
        while True:
            try:
                self.call("GET", "/walnut/status")
                return
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("jupyter server did not start") from None
                time.sleep(0.1)  # polling a subprocess, bounded by the deadline

    def call(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read() or b"null")

    async def ws(self, kernel_id: str) -> KernelWS:
        conn = await websocket_connect(HTTPRequest(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
            headers={"Authorization": f"token {self.token}"}))
        return KernelWS(conn)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)


@pytest.fixture
def node(tmp_path, ledger):
    # no vouchers are signed while the renter's server is down: a generous grace keeps a
    # slow restart (a loaded CI machine) from ending the session for non-payment, which is
    # what tests/test_provider_payments.py is about, not this test
    stack = StackNode(tmp_path / "provider", ledger, config=provider_config(
        provider={"name": "stack-node", "runtime": stack_runtime()},
        settlement={"grace_s": 300}))
    yield stack
    stack.stop()


async def test_remote_kernels_survive_a_server_restart(tmp_path, node, ledger):
    key = KeyPair.generate()
    key.save(tmp_path / "renter" / "wallet.key")
    ledger.fund(key.address, 10**12)
    server = Server(tmp_path, node.pinned_url, ledger)
    server.start()
    try:
        session = server.call("POST", "/walnut/sessions", {
            "provider_url": node.pinned_url, "shape": "cpu-small", "budget_mist": 600_000})
        kernel = server.call("POST", "/api/kernels", {"name": session["kernel_name"]})
        ws = await server.ws(kernel["id"])
        await ws.execute("state = 'remembered'")
        ws.conn.close()

        for how in (signal.SIGKILL, signal.SIGTERM):  # a crash, then a clean restart
            server.stop(how)
            server.start()
            deadline = time.monotonic() + 180
            while kernel["id"] not in [k["id"] for k in server.call("GET", "/api/kernels")]:
                assert time.monotonic() < deadline, "kernel was not re-attached"
                time.sleep(0.1)  # the server re-attaches in the background
            ws = await server.ws(kernel["id"])
            assert (await ws.execute("print(state)")).stdout == "remembered\n", how
            ws.conn.close()
        records = node.store.list()
        assert [(r.id, r.status) for r in records] == [(session["id"], "running")]  # one paid
    finally:
        server.stop()
