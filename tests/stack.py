"""The default stack users run, for fault, attack, browser and verification tests.

A real provider node with the Docker runtime, HTTPS with a self-signed certificate, and
renters that pin its fingerprint (`StackNode.pinned_url`). The node runs on its own event
loop in a thread, so module-scoped sessions serve several tests and any test loop (pytest's,
pytest-jupyter's) can use it through `run()`.

`WALNUT_TEST_RUNTIME=process` and `WALNUT_TEST_TLS=off` select the cheaper matrix leg (local
processes, plain HTTP); CI runs the default leg.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

from conftest import docker_or_skip, provider_config
from kernel_ws import KernelWS

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.tls import fingerprint, generate_self_signed, server_context
from jupyter_walnut.ledger import LocalLedger


def stack_runtime() -> str:
    return os.environ.get("WALNUT_TEST_RUNTIME", "docker")


def stack_tls() -> bool:
    return os.environ.get("WALNUT_TEST_TLS", "on") != "off"


def tls_context(directory: Path, name: str = "provider"):
    """A server context for a self-signed certificate, its fingerprint attached; the one
    already in `directory` is kept, so a restarted node keeps the pin renters hold."""
    cert, key = directory / name / "cert.pem", directory / name / "key.pem"
    fp = fingerprint(cert.read_bytes()) if cert.exists() else generate_self_signed(
        name, cert, key)
    context = server_context(cert, key)
    context.walnut_fingerprint = fp
    return context, fp


class StackNode:
    """A provider node of the default stack (Docker + TLS) on its own loop in a thread."""

    def __init__(self, state_dir: Path, ledger, *, config=None, identity: KeyPair | None = None,
                 runtime: str | None = None, tls: bool | None = None, host: str = "127.0.0.1",
                 metering_interval_s: float = 0.5) -> None:
        from jupyter_walnut.provider.node import ProviderNode

        self.runtime_name = runtime or stack_runtime()
        self.tls = stack_tls() if tls is None else tls
        self.ledger = ledger
        self.state_dir = state_dir
        self.identity = identity or KeyPair.generate()
        self.docker = None
        if self.runtime_name == "docker":
            docker_or_skip()
            import docker

            from jupyter_walnut.provider.image import ensure_gateway_image

            self.docker = docker.from_env()
            ensure_gateway_image(self.docker, progress=print)  # cached after the first build
        self.config = config or provider_config(
            provider={"name": "stack-node", "runtime": self.runtime_name})
        self.fingerprint: str | None = None
        ssl_context = None
        if self.tls:
            ssl_context, self.fingerprint = tls_context(state_dir)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            node = ProviderNode(self.config, self.identity, state_dir,
                                runtime=self._make_runtime(), ledger=ledger)
            node.sessions.metering_interval_s = metering_interval_s
            node.sessions.watch_interval_s = metering_interval_s
            return node, await node.start(host=host, port=0, ssl_context=ssl_context)

        self.node, self.port = self.run(start())
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.store = self.node.store
        self.sessions = self.node.sessions

    def _make_runtime(self):
        if self.runtime_name == "docker":
            from jupyter_walnut.provider.runtimes.docker import DockerRuntime

            return DockerRuntime(self.docker, provider_id="stack-" + self.identity.address[2:12])
        from jupyter_walnut.provider.runtimes.process import ProcessRuntime

        return ProcessRuntime(self.state_dir / "sessions")

    @property
    def pinned_url(self) -> str:
        """The URL a renter uses: with the certificate pin when TLS is on."""
        return f"{self.url}#sha256={self.fingerprint}" if self.fingerprint else self.url

    def client(self, key: KeyPair):
        from jupyter_walnut.renter.provider_client import ProviderClient

        return ProviderClient(self.pinned_url, key)

    def run(self, coro, timeout: float = 180):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, stop_sessions: bool = True) -> None:
        if not self.thread.is_alive():
            return
        self.run(self.node.stop(stop_sessions=stop_sessions))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if self.docker is not None:
            self.docker.close()

    def leftover_containers(self) -> list[str]:
        """Names of this node's session containers still on the engine (Docker runtime)."""
        if self.runtime_name != "docker":
            return []
        import docker

        client = docker.from_env()
        try:
            provider = "stack-" + self.identity.address[2:12]
            return [c.name for c in client.containers.list(
                all=True, filters={"label": f"walnut.provider={provider}"})]
        finally:
            client.close()


def renter_server_config(home: Path, ledger_path: Path | str, providers: list[str], *,
                         poll_interval: float = 0.5, **extra: dict) -> dict:
    """A pytest-jupyter server config: the Walnut extension with a funded wallet in `home`
    (funded on the local ledger at `ledger_path`) and these providers."""
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    with LocalLedger(ledger_path) as ledger:
        ledger.fund(key.address, 10**12)
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": providers, "walnut_home": str(home),
                          "ledger_path": str(ledger_path), "poll_interval": poll_interval,
                          "challenge_period": 60},
            **extra}


async def launch_kernel(jp_fetch, jp_ws_fetch, provider_url: str, budget_mist: int):
    """A paid session through the renter's /walnut API, a kernel on it and its websocket,
    as JupyterLab opens them: (session, kernel, KernelWS)."""
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": provider_url, "shape": "cpu-small", "budget_mist": budget_mist}),
        request_timeout=180)
    session = json.loads(resp.body)
    kernel = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps(
        {"name": session["kernel_name"]}))).body)
    ws = KernelWS(await jp_ws_fetch("api", "kernels", kernel["id"], "channels"))
    return session, kernel, ws
