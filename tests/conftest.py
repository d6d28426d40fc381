from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (kernel_ws)

from jupyter_walnut.common.keys import KeyPair  # noqa: E402
from jupyter_walnut.provider.config import parse_config  # noqa: E402

pytest_plugins = ["pytest_jupyter.jupyter_server"]


def provider_config(**overrides):
    data = {
        "provider": {"name": "test-node", "runtime": "process"},
        "settlement": {"settle_after_s": 1, "min_challenge_period_s": 60},
        "shapes": [
            {"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 1024,
             "price_per_second_mist": 1000},
            {"name": "gpu-1", "gpus": 1, "cpus": 2, "memory_mb": 2048,
             "price_per_second_mist": 50000},
        ],
        "images": [{"name": "python", "reference": "builtin"}],
        "availability": {"max_sessions": 3},
    }
    if "packages" not in overrides:  # the node's devpi (seconds to start) only where asked for
        data["packages"] = {"cache": "off"}
    for key, value in overrides.items():
        data[key] = value if not isinstance(value, dict) else {**data.get(key, {}), **value}
    return parse_config(data)


FUNDS = 10**12  # 1000 SUI on the local ledger for each test renter


@pytest.fixture
def ledger(tmp_path):
    """The local ledger shared by the test's providers and renters (one SQLite file)."""
    from jupyter_walnut.ledger import LocalLedger

    with LocalLedger(tmp_path / "ledger.sqlite") as led:
        yield led


def open_channel(ledger, renter: KeyPair, provider, deposit: int = 600_000,
                 price: int = 1000, challenge_period_s: int = 60) -> str:
    """A funded renter's open channel to `provider` (a node or ThreadedProvider)."""
    if ledger.balance(renter.address) < deposit:
        ledger.fund(renter.address, FUNDS)
    channel = ledger.open_channel(renter, provider.identity.address, renter.public_key,
                                  deposit, price, challenge_period_s)
    return channel.channel_id


@pytest_asyncio.fixture
async def provider_factory(tmp_path, ledger):
    """Start real provider nodes (process runtime) on loopback; stopped after the test."""
    from jupyter_walnut.provider.node import ProviderNode
    from jupyter_walnut.provider.runtimes.process import ProcessRuntime

    nodes = []

    async def start(config=None, state_dir=None, identity=None, runtime=None, ssl_context=None):
        config = config or provider_config()
        state_dir = state_dir or tmp_path / f"provider{len(nodes)}"
        identity = identity or KeyPair.generate()
        runtime = runtime or ProcessRuntime(state_dir / "sessions")
        node = ProviderNode(config, identity, state_dir, runtime=runtime, ledger=ledger)
        node.sessions.metering_interval_s = 0.2
        node.sessions.watch_interval_s = 0.2
        port = await node.start(host="127.0.0.1", port=0, ssl_context=ssl_context)
        node.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.stop(stop_sessions=True)


@pytest_asyncio.fixture
async def provider(provider_factory):
    return await provider_factory()


@pytest.fixture
def renter_key():
    return KeyPair.generate()


def docker_or_skip() -> None:
    """Skip without a Docker engine, unless WALNUT_REQUIRE_DOCKER=1 makes that a failure."""
    from jupyter_walnut.provider.runtimes.docker import docker_available

    ok, reason = docker_available()
    if not ok:
        if os.environ.get("WALNUT_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Docker engine required (WALNUT_REQUIRE_DOCKER=1): {reason}")
        pytest.skip(f"no Docker engine: {reason}")


class ThreadedProvider:
    """A real provider node on its own event loop in a thread: usable from any test loop
    (pytest-jupyter runs its tests on its own loop)."""

    def __init__(self, state_dir: Path, ledger, config=None, identity=None,
                 runtime=None) -> None:
        import asyncio
        import threading

        from jupyter_walnut.provider.node import ProviderNode
        from jupyter_walnut.provider.runtimes.process import ProcessRuntime

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.identity = identity or KeyPair.generate()

        async def start():
            node = ProviderNode(config or provider_config(), self.identity, state_dir,
                                runtime=runtime or ProcessRuntime(state_dir / "sessions"),
                                ledger=ledger)
            node.sessions.metering_interval_s = 0.2
            node.sessions.watch_interval_s = 0.2
            return node, await node.start(host="127.0.0.1", port=0)

        self.node, port = self.run(start())
        self.url = f"http://127.0.0.1:{port}"
        self.store = self.node.store
        self.sessions = self.node.sessions

    def run(self, coro, timeout: float = 120):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, stop_sessions: bool = True) -> None:
        if not self.thread.is_alive():
            return  # already stopped
        self.run(self.node.stop(stop_sessions=stop_sessions))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def threaded_provider(tmp_path, ledger):
    node = ThreadedProvider(tmp_path / "provider", ledger)
    yield node
    node.stop()


def on_settled(node) -> asyncio.Queue:
    """Session ids as the provider settles their channels (its own event hook)."""
    queue, chained = asyncio.Queue(), node.sessions.on_event

    def hook(kind, rec):
        chained(kind, rec)
        if kind == "settled":
            queue.put_nowait(rec.id)

    node.sessions.on_event = hook
    return queue


# In CI a skip is a failure unless it names what CI cannot have: a GPU or a Sui node.
ALLOWED_CI_SKIPS = ("gpu", "sui node", "walnut_sui_rpc_url", "walnut_gpu_tests")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple)
                 else report.longrepr).lower()
    if not any(word in reason for word in ALLOWED_CI_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run it: {reason}"


@pytest.fixture(autouse=True)
def _keep_the_main_module():
    """An in-process IPython shell (the magics tests) puts its user namespace, a module with
    no __spec__, in sys.modules['__main__'], which breaks multiprocessing's spawn in every
    later test: each test gets back the __main__ it started with."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
