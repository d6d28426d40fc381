"""The provider with its Docker runtime, for real: sessions are hardened containers, and a
restarted provider re-adopts them with their kernels' state and metering intact."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from conftest import docker_or_skip, open_channel, provider_config
from kernel_ws import KernelWS

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.renter.provider_client import ProviderClient

pytestmark = [pytest.mark.asyncio, pytest.mark.docker, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def docker_client():
    docker_or_skip()
    import docker

    from jupyter_walnut.provider.image import ensure_gateway_image

    client = docker.from_env()
    ensure_gateway_image(client, progress=print)  # cached after the first build
    return client


@pytest_asyncio.fixture
async def docker_node(docker_client, tmp_path, ledger):
    from jupyter_walnut.provider.node import ProviderNode
    from jupyter_walnut.provider.runtimes.docker import DockerRuntime

    identity = KeyPair.generate()
    nodes = []

    async def start():
        runtime = DockerRuntime(docker_client, provider_id=identity.address[:18])
        node = ProviderNode(provider_config(provider={"name": "docker-node",
                                                      "runtime": "docker"}),
                            identity, tmp_path / "provider", runtime=runtime, ledger=ledger)
        node.sessions.metering_interval_s = 0.2
        node.sessions.watch_interval_s = 0.2
        node.url = f"http://127.0.0.1:{await node.start(host='127.0.0.1', port=0)}"
        nodes.append(node)
        return node

    yield start
    for node in reversed(nodes):
        await node.stop(stop_sessions=True)


async def test_docker_session_end_to_end_and_restart_adoption(docker_node, docker_client,
                                                              renter_key):
    node = await docker_node()
    client = ProviderClient(node.url, renter_key)
    assert (await client.status())["runtime"] == "docker"
    created = await client.create_session(image="python", shape="cpu-small",
                                          channel_id=open_channel(node.ledger, renter_key, node))
    sid, token = created["id"], created["access_token"]
    await client.wait_running(sid)
    container_id = node.store.get(sid).runtime_ref
    container = docker_client.containers.get(container_id)
    assert container.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert container.attrs["HostConfig"]["Memory"] == 1024 * 1024 * 1024
    kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})
    ws = KernelWS(await client.kernel_websocket(sid, token, kernel["id"]))
    result = await ws.execute("import os; secret = 'kept'; print(os.getuid(), "
                              "os.environ['WALNUT_SESSION_ID'])")
    assert result.stdout.split() == ["1000", sid]
    # interrupt a long-running cell through the proxy
    started = asyncio.Event()
    cell = asyncio.ensure_future(ws.execute(
        "import time\nprint('go', flush=True)\ntime.sleep(300)",
        on_message=lambda m: m["header"]["msg_type"] == "stream" and started.set()))
    await asyncio.wait_for(started.wait(), 60)
    await client.gateway(sid, token, "POST", f"api/kernels/{kernel['id']}/interrupt")
    assert (await asyncio.wait_for(cell, 60)).error["ename"] == "KeyboardInterrupt"
    ws.conn.close()

    # the provider restarts; the container and its kernel keep running
    metered = node.store.get(sid).running_ms
    await node.stop(stop_sessions=False)
    assert docker_client.containers.get(container_id).status == "running"
    node2 = await docker_node()
    client2 = ProviderClient(node2.url, renter_key)
    session = await client2.get_session(sid)
    assert session["status"] == "running"
    assert node2.store.get(sid).running_ms >= metered  # no time lost across the restart
    ws = KernelWS(await client2.kernel_websocket(sid, token, kernel["id"]))
    assert (await ws.execute("print(secret)")).stdout == "kept\n"  # kernel state survived
    ws.conn.close()

    stopped = await client2.stop_session(sid)
    assert stopped["status"] == "stopped"
    import docker

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_id)
