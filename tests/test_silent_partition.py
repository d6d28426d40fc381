"""A silent partition between the renter's Jupyter Server and its provider (packets dropped,
no reset): keepalive pings find the dead link in seconds, the session view says
"reconnecting", and the resumable link replays when the network heals, so a running cell
loses and duplicates nothing. Default stack: Docker runtime, TLS with a pinned certificate."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import provider_config
from kernel_ws import KernelWS
from netcut import NetCut
from stack import StackNode, launch_kernel, renter_server_config, stack_runtime

from jupyter_walnut.common.keepalive import INTERVAL_ENV, TIMEOUT_ENV, Keepalive

pytestmark = pytest.mark.timeout(480)

# pings every second, a link silent for 4 s is dead: even the 10 s partition is noticed
PING_S, DEAD_S = "1", "4"
LINE_S = 0.1  # the cell prints one numbered line this often


@pytest.fixture(scope="module")
def keepalive_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(INTERVAL_ENV, PING_S)
        mp.setenv(TIMEOUT_ENV, DEAD_S)
        yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keepalive_env):
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp("silent")
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        # vouchers cannot reach the provider during the partition: its grace must outlast it
        config = provider_config(provider={"name": "stack-node", "runtime": stack_runtime()},
                                 settlement={"grace_s": 600})
        node = StackNode(tmp / "provider", ledger, config=config)
        cut = NetCut("127.0.0.1", node.port)
        try:
            yield node, cut, ledger
        finally:
            cut.close()
            node.stop()


@pytest.fixture
def jp_server_config(stack, tmp_path):
    node, cut, ledger = stack
    return renter_server_config(tmp_path / "renter", ledger.path,
                                [cut.relayed(node.pinned_url)])


async def link_states(jp_fetch, session_id: str) -> set[str]:
    """What the renter's /walnut session view says about the session's kernel links."""
    view = json.loads((await jp_fetch("walnut", "sessions", session_id)).body)
    return set(view["kernel_links"].values())


async def wait_for_link_state(jp_fetch, session_id: str, state: str, deadline: float) -> None:
    while state not in await link_states(jp_fetch, session_id):
        assert time.monotonic() < deadline, f"the session view never said {state!r}"
        await asyncio.sleep(0.2)  # polling the renter's REST view until the deadline


async def run_through_partition(jp_fetch, ws: KernelWS, cut: NetCut, session_id: str,
                                partition_s: float) -> None:
    lines = int((partition_s + 25) / LINE_S)  # the cell outlasts the partition
    received: list[str] = []
    streaming = asyncio.Event()

    def on_message(m: dict) -> None:
        if m["header"]["msg_type"] == "stream" and m["content"]["name"] == "stdout":
            received.append(m["content"]["text"])
            if len("".join(received).splitlines()) >= 10:
                streaming.set()

    cell = asyncio.ensure_future(ws.execute(
        f"import time\nfor i in range({lines}):\n    print('line', i, flush=True)\n"
        f"    time.sleep({LINE_S})", on_message=on_message, timeout=partition_s + 120))
    await asyncio.wait_for(streaming.wait(), 60)
    cut.silence()
    healed_at = time.monotonic() + partition_s
    await wait_for_link_state(jp_fetch, session_id, "reconnecting", healed_at)
    assert not cell.done()  # the cell waits through the partition: no error, no hang-up
    await asyncio.sleep(max(0.0, healed_at - time.monotonic()))  # the rest of the outage
    assert "reconnecting" in await link_states(jp_fetch, session_id)
    cut.restore()
    result = await asyncio.wait_for(cell, partition_s + 180)
    expected = [f"line {i}" for i in range(lines)]
    assert "".join(received).splitlines() == expected  # every line, once, in order
    assert result.status == "ok"
    await wait_for_link_state(jp_fetch, session_id, "connected", time.monotonic() + 60)


async def test_a_cell_runs_through_silent_partitions(jp_fetch, jp_ws_fetch, stack):
    node, cut, _ = stack
    session, kernel, ws = await launch_kernel(jp_fetch, jp_ws_fetch,
                                              cut.relayed(node.pinned_url), 1_000_000)
    assert (await ws.execute("x = 'kept'; print('ready')", timeout=60)).stdout == "ready\n"
    assert await link_states(jp_fetch, session["id"]) == {"connected"}

    await run_through_partition(jp_fetch, ws, cut, session["id"], 10)
    await run_through_partition(jp_fetch, ws, cut, session["id"], 90)

    again = await ws.execute("print(x)", timeout=60)
    assert again.stdout == "kept\n"  # the same kernel, its state intact
    view = json.loads((await jp_fetch("walnut", "sessions", session["id"])).body)
    assert view["status"] == "running"


def test_keepalive_settings_are_checked_and_named():
    assert Keepalive.from_env({}) == Keepalive(interval_s=5.0, timeout_s=15.0)
    assert Keepalive.from_env({INTERVAL_ENV: "0"}).client_options()["ping_interval"] is None
    for bad, named in (({INTERVAL_ENV: "soon"}, INTERVAL_ENV),
                       ({INTERVAL_ENV: "nan"}, INTERVAL_ENV), ({TIMEOUT_ENV: "-1"}, TIMEOUT_ENV),
                       ({INTERVAL_ENV: "5", TIMEOUT_ENV: "5"}, TIMEOUT_ENV)):
        with pytest.raises(ValueError, match=named):
            Keepalive.from_env(bad)
