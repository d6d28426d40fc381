"""Remote kernels when the provider goes away: a clear dead state with the reason, no hang,
no charge after the end; and a short network cut that heals by itself.

On the default stack (tests/stack.py: Docker sessions, TLS pinned through the cut relay);
WALNUT_TEST_RUNTIME=process WALNUT_TEST_TLS=off is the cheaper leg."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import provider_config
from netcut import NetCut
from stack import StackNode, launch_kernel, renter_server_config, stack_runtime

pytestmark = pytest.mark.timeout(300)


def start_node(tmp_path, ledger, identity=None) -> StackNode:
    config = provider_config(provider={"name": "test-node", "runtime": stack_runtime()})
    return StackNode(tmp_path / "provider", ledger, config=config, identity=identity,
                     metering_interval_s=0.2)


@pytest.fixture
def stack_node(tmp_path, ledger):
    node = start_node(tmp_path, ledger)
    yield node
    node.stop()


@pytest.fixture
def netcut(stack_node):
    cut = NetCut("127.0.0.1", stack_node.port)
    yield cut
    cut.close()


@pytest.fixture
def jp_server_config(netcut, stack_node, tmp_path, ledger, request):
    marker = request.node.get_closest_marker("reconnect_timeout")
    reconnect_timeout = marker.args[0] if marker else 60.0
    return renter_server_config(
        tmp_path / "renter", ledger.path, [netcut.relayed(stack_node.pinned_url)],
        poll_interval=0.2, WalnutProvisioner={"reconnect_timeout": reconnect_timeout})


async def _kernel(jp_fetch, jp_ws_fetch, netcut, node: StackNode):
    return await launch_kernel(jp_fetch, jp_ws_fetch, netcut.relayed(node.pinned_url),
                               300_000)


@pytest.mark.reconnect_timeout(3.0)
async def test_unreachable_provider_kills_the_kernel_with_a_reason(jp_fetch, jp_ws_fetch,
                                                                   netcut, stack_node):
    session, kernel, ws = await _kernel(jp_fetch, jp_ws_fetch, netcut, stack_node)
    started = asyncio.Event()
    cell = asyncio.ensure_future(ws.execute(
        "import time\nprint('go', flush=True)\ntime.sleep(300)",
        on_message=lambda m: m["header"]["msg_type"] == "stream" and started.set()))
    await asyncio.wait_for(started.wait(), 30)
    netcut.cut()  # the provider vanishes from the network for good
    result = await asyncio.wait_for(cell, 60)  # not a hang
    assert result.error["ename"] == "WalnutSessionEnded"
    assert "lost the connection to the provider" in result.stderr
    kernels = json.loads((await jp_fetch("api", "kernels")).body)
    assert [k["execution_state"] for k in kernels if k["id"] == kernel["id"]] == ["dead"]


async def test_a_network_cut_mid_stream_loses_and_duplicates_nothing(jp_fetch, jp_ws_fetch,
                                                                     netcut, stack_node):
    session, kernel, ws = await _kernel(jp_fetch, jp_ws_fetch, netcut, stack_node)
    assert (await ws.execute("x = 1; print('before')")).stdout == "before\n"
    ticks = asyncio.Event()
    seen = []

    def on_message(m):
        if m["header"]["msg_type"] == "stream":
            seen.append(m["content"]["text"])
            if len("".join(seen).splitlines()) >= 5:
                ticks.set()

    # a cell streams output for ~14 s; the network to the provider is cut for 10 s of it
    cell = asyncio.ensure_future(ws.execute(
        "import time\nfor i in range(70):\n    print('tick', i, flush=True)\n"
        "    time.sleep(0.2)", on_message=on_message, timeout=120))
    await asyncio.wait_for(ticks.wait(), 30)
    netcut.cut()
    await asyncio.sleep(10)  # the outage itself: time passing is the point here
    netcut.restore()
    result = await asyncio.wait_for(cell, 120)
    assert result.status == "ok"
    assert result.stdout == "".join(f"tick {i}\n" for i in range(70))  # all, once, in order
    again = await ws.execute("print('after', x)", timeout=60)
    assert again.stdout == "after 1\n"  # same kernel, state intact


async def test_provider_restart_keeps_the_kernel_usable(jp_fetch, jp_ws_fetch, netcut,
                                                       stack_node, tmp_path, ledger):
    session, kernel, ws = await _kernel(jp_fetch, jp_ws_fetch, netcut, stack_node)
    assert (await ws.execute("x = 'kept'; print('ok')")).stdout == "ok\n"
    # the provider process restarts: same state, identity and certificate, a new port
    # behind the link; its session (container or process) is adopted, not restarted
    await asyncio.to_thread(stack_node.stop, False)
    restarted = await asyncio.to_thread(start_node, tmp_path, ledger, stack_node.identity)
    try:
        netcut.target = ("127.0.0.1", restarted.port)
        result = await ws.execute("print(x)", timeout=90)
        assert result.stdout == "kept\n"
        assert restarted.store.get(session["id"]).status == "running"
    finally:
        await asyncio.to_thread(restarted.stop)
