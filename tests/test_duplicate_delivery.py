"""A provider that replays frames the renter already has (hostile, or one that lost the
renter's acknowledgements) gets each output to the renter's clients once: the kernel bridge
drops every resumable-link frame numbered at or below the last one it delivered.

The provider here keeps everything it ever sent on a link and replays all of it on each
reconnect, ignoring both the renter's acknowledgements and the `walnut_ack` it reconnects
with. Default stack: Docker runtime, TLS with a pinned certificate, the renter's real
Jupyter Server; a network cut mid-stream forces the reconnect."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from netcut import NetCut
from stack import StackNode, launch_kernel, renter_server_config

from jupyter_walnut.provider import app as provider_app
from jupyter_walnut.provider.links import ResumableLink

pytestmark = pytest.mark.timeout(240)


class ReplayingLink(ResumableLink):
    """A link that forgets no frame and replays them all whenever the renter comes back."""

    replayed_known = 0  # frames replayed that the renter had already received

    def _drop_acked(self, ack: int) -> None:
        pass  # keep every frame: acknowledgements are ignored

    def attach(self, handler, renter_ack: int) -> None:
        ReplayingLink.replayed_known += sum(1 for seq, _ in self.out_buffer if seq <= renter_ack)
        super().attach(handler, 0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp("replay")
    with pytest.MonkeyPatch.context() as mp, \
            LocalLedger(tmp / "ledger.sqlite") as ledger:
        mp.setattr(provider_app, "ResumableLink", ReplayingLink)  # this node's links replay
        node = StackNode(tmp / "provider", ledger)
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


async def wait_for_link_state(jp_fetch, session_id: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        view = json.loads((await jp_fetch("walnut", "sessions", session_id)).body)
        if state in view["kernel_links"].values():
            return
        assert time.monotonic() < deadline, f"the session view never said {state!r}"
        await asyncio.sleep(0.1)  # polling the renter's REST view until the deadline


async def test_a_replayed_frame_reaches_the_client_once(jp_fetch, jp_ws_fetch, stack):
    node, cut, _ = stack
    session, kernel, ws = await launch_kernel(jp_fetch, jp_ws_fetch,
                                              cut.relayed(node.pinned_url), 300_000)
    assert (await ws.execute("print('before')", timeout=60)).stdout == "before\n"

    received: list[str] = []
    streaming = asyncio.Event()

    def on_message(m: dict) -> None:
        if m["header"]["msg_type"] == "stream" and m["content"]["name"] == "stdout":
            received.append(m["content"]["text"])
            if len("".join(received).splitlines()) >= 20:
                streaming.set()

    cell = asyncio.ensure_future(ws.execute(
        "import time\nfor i in range(200):\n    print('line', i, flush=True)\n"
        "    time.sleep(0.05)", on_message=on_message, timeout=120))
    await asyncio.wait_for(streaming.wait(), 60)
    cut.cut()  # mid-stream: the bridge reconnects, and the provider replays everything
    await wait_for_link_state(jp_fetch, session["id"], "reconnecting", 30)
    cut.restore()
    await asyncio.wait({cell}, timeout=120)
    assert ReplayingLink.replayed_known > 0  # the renter was sent what it already had
    assert "".join(received).splitlines() == [f"line {i}" for i in range(200)]  # each once
    assert cell.done() and cell.result().status == "ok"
    again = await ws.execute("print('after')", timeout=60)
    assert again.stdout == "after\n"  # no stale replies mixed into the next cell
