"""A provider killed with SIGKILL on the default stack (Docker runtime, TLS with a pinned
certificate, the renter's real Jupyter Server), mid-cell, then restarted on the same home:
the session's container is adopted (the same container, never restarted), its kernel keeps
its state, the renter's kernel link resumes by itself and the cell finishes, and metering
charges the served time only: nothing for the outage, and no gap beyond it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import docker_or_skip
from stack import launch_kernel, renter_server_config

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.tls import fingerprint
from jupyter_walnut.ledger import LocalLedger

pytestmark = [pytest.mark.docker, pytest.mark.timeout(420)]

CLI = [sys.executable, "-m", "jupyter_walnut.provider.cli"]
OUTAGE_S = 8.0  # how long no provider process runs; the time passing is the point
SLACK_S = 3.0  # metering checkpoints (1 s), startup and a busy machine; well under OUTAGE_S
LINES = 400  # the running cell prints one numbered line every 0.1 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServedNode:
    """`walnut-provider serve` as a user runs it: a subprocess on a fixed port."""

    home: Path
    env: dict
    port: int
    proc: subprocess.Popen | None = None

    @property
    def port_file(self) -> Path:
        return self.home / "port"

    @property
    def pinned_url(self) -> str:
        fp = fingerprint((self.home / "tls" / "cert.pem").read_bytes())
        return f"https://127.0.0.1:{self.port}#sha256={fp}"

    @property
    def provider_id(self) -> str:
        return KeyPair.load(self.home / "identity.key").address[:18]

    def start(self) -> None:
        self.port_file.unlink(missing_ok=True)
        log = open(self.home / "serve.log", "a")  # noqa: SIM115 - the child keeps writing it
        self.proc = subprocess.Popen(
            [*CLI, "--home", str(self.home), "serve", "--runtime", "docker", "--port",
             str(self.port), "--port-file", str(self.port_file), "--log-format", "text"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 120  # the first start may build the gateway image
        while not self.port_file.exists() or not self.port_file.read_text():
            assert self.proc.poll() is None, (self.home / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "walnut-provider serve did not start"
            time.sleep(0.05)  # polling a subprocess's port file, bounded by the deadline

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # a crash: no cleanup of any kind
        self.proc.wait(30)

    def row(self, session_id: str) -> dict:
        """The provider's own record of a session, read from its store (read-only)."""
        db = sqlite3.connect(f"file:{self.home / 'state' / 'provider.sqlite'}?mode=ro",
                             uri=True)
        try:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
            return dict(row)
        finally:
            db.close()


@pytest.fixture
def served(tmp_path):
    docker_or_skip()
    import docker

    from jupyter_walnut.provider.image import ensure_gateway_image

    client = docker.from_env()
    ensure_gateway_image(client, progress=print)  # cached after the first build
    env = {**os.environ, "WALNUT_LEDGER": str(tmp_path / "ledger.sqlite")}
    home = tmp_path / "prov"
    done = subprocess.run([*CLI, "--home", str(home), "init", "--name", "crash-node"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    node = ServedNode(home, env, free_port())
    node.start()
    try:
        yield node
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            node.proc.wait(60)
        from jupyter_walnut.provider.runtimes.docker import DockerRuntime

        leftover = DockerRuntime(client, provider_id=node.provider_id,
                                 disk_dir=home / "state" / "disks")
        for handle in asyncio.run(leftover.adopt()):  # whatever a failed test left running
            asyncio.run(leftover.stop(handle))
        client.close()


@pytest.fixture
def jp_server_config(served, tmp_path):
    return renter_server_config(tmp_path / "renter", served.env["WALNUT_LEDGER"],
                                [served.pinned_url])


async def wait_for(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.1)  # polling a condition until the deadline


async def link_states(jp_fetch, session_id: str) -> set[str]:
    view = json.loads((await jp_fetch("walnut", "sessions", session_id)).body)
    return set(view["kernel_links"].values())


def container_of(served: ServedNode, session_id: str):
    import docker

    client = docker.from_env()
    try:
        container = client.containers.get(served.row(session_id)["runtime_ref"])
        return container.id, container.attrs["State"]["StartedAt"], \
            container.attrs["RestartCount"], container.status
    finally:
        client.close()


async def test_sigkilled_provider_adopts_its_container_and_meters_no_outage(
        jp_fetch, jp_ws_fetch, served):
    session, kernel, ws = await launch_kernel(jp_fetch, jp_ws_fetch, served.pinned_url,
                                              2000 * 900)
    sid = session["id"]
    assert (await ws.execute("kept = 'before the crash'", timeout=90)).status == "ok"

    received: list[str] = []
    streaming = asyncio.Event()

    def on_message(m: dict) -> None:
        if m["header"]["msg_type"] == "stream" and m["content"]["name"] == "stdout":
            received.append(m["content"]["text"])
            if len("".join(received).splitlines()) >= 20:
                streaming.set()

    cell = asyncio.ensure_future(ws.execute(
        f"import time\nfor i in range({LINES}):\n    counter = i\n"
        "    print('line', i, flush=True)\n    time.sleep(0.1)",
        on_message=on_message, timeout=300))
    await asyncio.wait_for(streaming.wait(), 60)
    before = container_of(served, sid)

    served.kill()  # mid-cell
    dead_at = time.time()
    crashed = served.row(sid)  # what the provider had recorded when it died
    assert crashed["status"] == "running"
    await wait_for(lambda: _has(jp_fetch, sid, "reconnecting"), "the link reconnecting", 60)
    await asyncio.sleep(OUTAGE_S)  # the outage itself
    restart_at = time.time()
    await asyncio.to_thread(served.start)
    back_at = time.time()

    # the same container, never restarted; the link resumes and the cell runs to its end
    assert container_of(served, sid) == before
    await wait_for(lambda: _has(jp_fetch, sid, "connected"), "the link connected again", 120)
    result = await asyncio.wait_for(cell, 300)
    assert result.status == "ok"
    numbers = [int(line.split()[1]) for line in "".join(received).splitlines()]
    assert numbers == sorted(set(numbers)), "a line came twice or out of order"
    assert numbers[:20] == list(range(20)) and numbers[-1] == LINES - 1
    # the gateway kept what the kernel printed while no provider ran; at most a frame that
    # was inside the killed process is gone
    assert len(numbers) >= LINES - 5, f"{LINES - len(numbers)} lines lost"
    state = await ws.execute("print(kept, counter)", timeout=60)
    assert state.stdout == f"before the crash {LINES - 1}\n"  # the kernel kept its state
    assert container_of(served, sid) == before

    await jp_fetch("walnut", "sessions", sid, method="DELETE")
    await wait_for(lambda: _status(served, sid, "stopped"), "the provider's stop", 60)
    end = served.row(sid)

    # metering, by the provider's own numbers: served time is charged, the outage is not
    wall_s = end["ended_at"] - end["started_at"]
    metered_s = end["running_ms"] / 1000
    after_crash_s = (end["running_ms"] - crashed["running_ms"]) / 1000
    assert after_crash_s <= end["ended_at"] - restart_at + SLACK_S  # nothing while down
    assert after_crash_s >= end["ended_at"] - back_at - SLACK_S  # no gap once back
    assert metered_s <= wall_s - (restart_at - dead_at) + SLACK_S, (metered_s, wall_s)
    assert metered_s >= wall_s - (back_at - crashed["checkpoint_wall"]) - SLACK_S, \
        (metered_s, wall_s)

    # the money on the ledger: at most the metered cost is claimed, the rest goes back
    with LocalLedger(served.env["WALNUT_LEDGER"]) as ledger:
        await wait_for(lambda: _closed(ledger, end["channel_id"]), "the settlement", 90)
        channel = ledger.get_channel(end["channel_id"])
    assert 0 < channel.claimed <= end["running_ms"] * end["price_mist_per_second"] // 1000
    assert channel.claimed + channel.refunded == channel.deposited


async def _has(jp_fetch, session_id: str, state: str) -> bool:
    return state in await link_states(jp_fetch, session_id)


async def _status(served: ServedNode, session_id: str, status: str) -> bool:
    return served.row(session_id)["status"] == status


async def _closed(ledger: LocalLedger, channel_id: str) -> bool:
    return ledger.get_channel(channel_id).closed
