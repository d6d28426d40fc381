"""A session must not hurt the node or other sessions: what one renter's code can hold.

The attacker is the renter's code in a cell of a real Docker session on the default stack
(tests/stack.py: Docker runtime, TLS with a pinned certificate):

- disk: writing past the shape's `disk_mb` fails with ENOSPC in the workspace and in /tmp,
  and the provider's disk holds at most the allowance for it;
- GPUs: a CPU session's container says NVIDIA_VISIBLE_DEVICES=void, whatever the image says;
- resumable links: many detached links and output nobody acknowledges stay within the
  provider's caps (the node's `links` counters, not RSS).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest
from conftest import docker_or_skip, provider_config
from stack import StackNode
from test_container_breakout import Session

from jupyter_walnut.common.jupyter_wire import to_ws_v1
from jupyter_walnut.common.protocol import RESUME_SUBPROTOCOL, data_frame
from jupyter_walnut.common.remote_kernel import KernelError, RemoteKernel, new_message
from jupyter_walnut.provider.config import ConfigError
from jupyter_walnut.provider.links import LinkLimits
from jupyter_walnut.provider.runtimes.docker import resource_name

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

DISK_MB = 96
PRICE = 1
MiB = 2**20


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    docker_or_skip()
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp("limits")
    config = provider_config(
        provider={"name": "limits-node", "runtime": "docker"},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": PRICE, "disk_mb": DISK_MB}],
        settlement={"grace_s": 3600})  # no vouchers here: keep sessions up
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        stack = StackNode(tmp / "provider", ledger, config=config, runtime="docker", tls=True)
        try:
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def alice(node) -> Session:
    return Session(node)


FILL = r"""
import errno, json, os
def fill(path, limit_mb):
    written, error, chunk = 0, None, b"x" * 2**20
    try:
        with open(path, "wb") as fh:
            while written < limit_mb * 2**20:
                fh.write(chunk)
                fh.flush()
                written += len(chunk)
            os.fsync(fh.fileno())
    except OSError as exc:
        error = errno.errorcode.get(exc.errno, str(exc.errno))
    return {"written_mb": written // 2**20, "error": error}
print(json.dumps({"work": fill("/home/walnut/work/fill", %(mb)d),
                  "tmp": fill("/tmp/fill", %(mb)d)}))
"""


def test_writing_past_the_disk_allowance_fails_inside_and_spares_the_node(node, alice):
    name = resource_name(alice.id)
    disks = node.node.runtime.disks
    offer = node.run(alice.client.status())
    assert [s["disk_mb"] for s in offer["shapes"]] == [DISK_MB]  # the renter is told

    probe = alice.probe(FILL % {"mb": 4 * DISK_MB}, timeout=150)
    print(f"\nfilling 4x the {DISK_MB} MiB allowance: {probe}; "
          f"image holds {disks.allocated_bytes(name) / MiB:.1f} MiB on the provider's disk")
    for where in ("work", "tmp"):
        assert probe[where]["error"] == "ENOSPC", (where, probe)
        assert probe[where]["written_mb"] <= DISK_MB, (where, probe)
    # the workspace's bytes are on the session's own image, which cannot outgrow its size
    allocated = disks.allocated_bytes(name)
    assert probe["work"]["written_mb"] * MiB * 0.9 <= allocated <= DISK_MB * MiB
    # the session goes on, and deleting gives the space back
    again = alice.probe("import json, os\nos.remove('/home/walnut/work/fill')\n"
                        "os.remove('/tmp/fill')\nopen('/home/walnut/work/after', 'wb')"
                        ".write(b'y' * 2**20)\nprint(json.dumps({'ok': True}))")
    assert again == {"ok": True}


def test_a_cpu_session_sees_no_gpu(alice):
    probe = alice.probe("import json, os\nprint(json.dumps({k: os.environ.get(k) for k in "
                        "('NVIDIA_VISIBLE_DEVICES', 'CUDA_VISIBLE_DEVICES')}))")
    assert probe == {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
    env = alice.container.attrs["Config"]["Env"]
    assert "NVIDIA_VISIBLE_DEVICES=void" in env
    assert not alice.container.attrs["HostConfig"].get("DeviceRequests")


# --- resumable links -------------------------------------------------------------------------


def wait_for(condition, what: str, deadline_s: float = 60):
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling the provider's counters, bounded by the deadline


def link_socket(node, session: Session) -> tuple[object, str]:
    """A resumable kernel link with a fresh link id, as the renter's bridge opens one; the
    websocket and the link's key in the provider's table."""
    link_id = uuid.uuid4().hex
    conn = node.run(session.client.kernel_websocket(
        session.id, session.token, session.kernel["id"], subprotocols=[RESUME_SUBPROTOCOL],
        session=link_id, ack=0))
    return conn, f"{session.id}/api/kernels/{session.kernel['id']}/channels/{link_id}"


def test_detached_links_beyond_the_cap_are_dropped_oldest_first(node, alice):
    table = node.node.links
    limit = table.limits.detached_per_session
    opened = []
    for _ in range(limit + 4):  # a renter opening links and walking away from each
        conn, key = link_socket(node, alice)
        # the link enters the table before its handler attaches: wait for the attach, or the
        # detach below is seen before it happens (and its eviction after the count)
        wait_for(lambda k=key: k in table and table[k].handler is not None, "the attach")
        opened.append(key)
        node.loop.call_soon_threadsafe(conn.close)
        wait_for(lambda k=key: k not in table or table[k].handler is None, "the detach")
    kept = [k for k in opened if k in table]
    print(f"\n{len(opened)} detached links opened, {len(kept)} kept (cap {limit})")
    assert kept == opened[-limit:]  # the newest stay, the oldest went
    assert len(table.detached(alice.id)) == limit


FLOOD = "import sys\nfor _ in range(%d):\n    sys.stdout.write('z' * 2**20 + '\\n')\n" \
        "    sys.stdout.flush()\n"


def _execute(code: str, seq: int) -> bytes:
    """A numbered v1 frame with an execute_request, as the renter's bridge sends."""
    msg = new_message("execute_request", {"code": code, "silent": False, "store_history": False,
                                          "user_expressions": {}, "allow_stdin": False,
                                          "stop_on_error": True}, uuid.uuid4().hex)
    parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata",
                                                  "content")]
    return data_frame(seq, to_ws_v1("shell", parts))


async def read_without_acking(conn, table, peak: dict, until_bytes: int | None = None) -> str:
    """Read what the link sends and never acknowledge it: a renter that makes the provider
    hold its output. Returns the close reason, or "" once `until_bytes` arrived."""
    got = 0
    while True:
        msg = await asyncio.wait_for(conn.read_message(), 120)
        peak["total"] = max(peak["total"], table.buffered_bytes())
        if msg is None:
            return conn.close_reason or f"closed ({conn.close_code})"
        got += len(msg) if isinstance(msg, bytes) else 0
        if until_bytes is not None and got >= until_bytes:
            return ""


def test_output_nobody_acknowledges_stays_within_the_caps(node):
    table = node.node.links
    original = table.limits
    table.limits = LinkLimits(link_bytes=10 * MiB, session_bytes=64 * MiB,
                              total_bytes=12 * MiB, detached_per_session=4)
    bob, carol = Session(node), Session(node)  # kernels of their own: no other link listens
    peak = {"total": 0}

    async def flood(conn, lines: int, seq: int = 1) -> None:
        await conn.write_message(_execute(FLOOD % lines, seq), binary=True)

    try:
        bob_conn, bob_key = link_socket(node, bob)
        node.run(flood(bob_conn, 4))
        node.run(read_without_acking(bob_conn, table, peak, until_bytes=4 * MiB))
        held = table.buffered_bytes(bob.id)
        assert held >= 4 * MiB  # bob's link holds all of it, unacknowledged
        # carol's unacknowledged flood takes the provider over its total: her link goes
        carol_conn, _ = link_socket(node, carol)
        node.run(flood(carol_conn, 40))
        reason = node.run(read_without_acking(carol_conn, table, peak))
        print(f"\ncarol's link: {reason!r}; bob holds {held / MiB:.1f} MiB; peaks {peak}")
        assert "provider over 12 MiB unacknowledged" in reason
        assert bob_key in table  # the smaller holder was spared
        # bob's own flood takes his link over its cap
        node.run(flood(bob_conn, 40, seq=2))
        reason = node.run(read_without_acking(bob_conn, table, peak))
        assert "left over 10 MiB unacknowledged" in reason or "provider over" in reason, reason
        assert peak["total"] <= 12 * MiB + 2 * MiB  # a cap, plus the message that crossed it
        assert table.buffered_bytes(bob.id) == table.buffered_bytes(carol.id) == 0
        # both sessions still serve their renters on a plain websocket
        assert carol.execute("print('alive')").stdout == "alive\n"
        assert bob.execute("print('alive')").stdout == "alive\n"
    finally:
        table.limits = original
        bob.stop()
        carol.stop()


def test_control_kernel_output_is_capped_in_the_provider(node, alice):
    """The provider's own kernel client (jobs' control kernel) stops reading a cell whose
    output goes over its cap, instead of holding all of it."""
    rec = node.node.store.get(alice.id)

    async def flood():
        kernel = RemoteKernel(rec.gateway_url, {"Authorization": f"token {rec.gateway_token}"},
                              timeout=60)
        kernel.max_output_bytes = 4 * MiB  # as jobs' control kernel (CONTROL_OUTPUT_BYTES)
        try:
            await kernel.start()
            await kernel.execute(FLOOD % 16, timeout=60)
        finally:
            await kernel.shutdown()

    with pytest.raises(KernelError, match="over"):
        node.run(flood())


def test_disk_and_egress_settings_are_validated():
    base = {"name": "s", "cpus": 1, "memory_mb": 512, "price_per_second_mist": 1}
    assert provider_config(shapes=[base]).shapes[0].disk_mb == 10240  # the default
    assert provider_config(shapes=[base]).egress == "internet"
    for bad, message in ((0, "shapes[0].disk_mb: must be an integer >= 64"),
                         ("1g", "shapes[0].disk_mb: must be an integer >= 64"),
                         (True, "shapes[0].disk_mb: must be an integer >= 64")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            provider_config(shapes=[{**base, "disk_mb": bad}])
    with pytest.raises(ConfigError, match="network.egress: must be one of internet, offline"):
        provider_config(shapes=[base], network={"egress": "lan"})
    with pytest.raises(ConfigError, match="network.allow: unknown key"):
        provider_config(shapes=[base], network={"allow": ["10.0.0.0/8"]})
