from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (kernel_ws)

from jupyter_walnut.keys import KeyPair  # noqa: E402
from jupyter_walnut.provider.config import parse_config  # noqa: E402

pytest_plugins = ["pytest_jupyter.jupyter_server"]


def provider_config(**overrides):
    data = {
        "provider": {"name": "test-node", "runtime": "process"},
        "shapes": [
            {"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 1024,
             "price_mist_per_second": 1000},
            {"name": "gpu-1", "gpus": 1, "cpus": 2, "memory_mb": 2048,
             "price_mist_per_second": 50000},
        ],
        "images": [{"name": "python", "reference": "builtin"}],
        "availability": {"max_sessions": 3},
    }
    for key, value in overrides.items():
        data[key] = value if not isinstance(value, dict) else {**data.get(key, {}), **value}
    return parse_config(data)


@pytest.fixture
async def provider_factory(tmp_path):
    """Start real provider nodes (process runtime) on loopback; stopped after the test."""
    from jupyter_walnut.provider.node import ProviderNode
    from jupyter_walnut.provider.runtimes.process import ProcessRuntime

    nodes = []

    async def start(config=None, state_dir=None, identity=None, runtime=None):
        config = config or provider_config()
        state_dir = state_dir or tmp_path / f"provider{len(nodes)}"
        identity = identity or KeyPair.generate()
        runtime = runtime or ProcessRuntime(state_dir / "sessions")
        node = ProviderNode(config, identity, state_dir, runtime=runtime)
        node.sessions.metering_interval_s = 0.2
        node.sessions.watch_interval_s = 0.2
        port = await node.start(host="127.0.0.1", port=0)
        node.url = f"http://127.0.0.1:{port}"
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.stop(stop_sessions=True)


@pytest.fixture
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
