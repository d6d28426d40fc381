"""A full disk under the ledger, the renter's state or the provider's state: one clear error,
no money moved, nothing half-written, and everything works again once space is freed.

The disk is a real 4 MiB tmpfs filled with a ballast file, so SQLite meets a real ENOSPC.
Mounting needs root: elsewhere these tests skip with that reason. The provider is the default
stack (Docker sessions behind TLS, the renter pinning the certificate);
`WALNUT_TEST_RUNTIME=process` / `WALNUT_TEST_TLS=off` run the cheap leg.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import open_channel, provider_config
from stack import StackNode, stack_runtime

from jupyter_walnut.common.errors import WalnutError
from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.provider.app import STORAGE_ANSWERS
from jupyter_walnut.renter.manager import RenterManager
from jupyter_walnut.renter.provider_client import ProviderAPIError

pytestmark = pytest.mark.asyncio

FUNDS = 10**9
BUDGET = 300_000


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.ballast = path / "ballast"

    def fill(self, *databases: Path) -> None:
        """Take every free byte (dd stops at ENOSPC, as a runaway log would). The databases'
        write-ahead logs are emptied first, so their next write needs new blocks."""
        for path in databases:
            db = sqlite3.connect(path)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
        subprocess.run(["dd", "if=/dev/zero", f"of={self.ballast}", "bs=64k"],
                       capture_output=True)
        assert subprocess.run(["df", "--output=avail", "-B1", str(self.path)],
                              capture_output=True, text=True).stdout.split()[-1] == "0"

    def free(self) -> None:
        self.ballast.unlink()


@pytest.fixture
def small_disk(tmp_path) -> Iterator[SmallDisk]:
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def stack_factory(tmp_path, ledger):
    """Start default-stack provider nodes; stopped (sessions too) after the test."""
    nodes: list[StackNode] = []

    def start(config=None, state_dir: Path | None = None) -> StackNode:
        node = StackNode(state_dir or tmp_path / f"provider-{len(nodes)}", ledger,
                         config=config)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
    # whatever the test did to its sessions, none outlives its provider
    assert [c for node in nodes for c in node.leftover_containers()] == []


def gateways(node: StackNode) -> list:
    """The session gateways (containers or processes) this node's runtime still runs."""
    return node.run(node.node.runtime.adopt())


def intact(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


async def test_full_disk_under_the_ledger_moves_no_money(stack_factory, small_disk, tmp_path):
    node = stack_factory()
    ledger = LocalLedger(small_disk.path / "ledger.sqlite")
    key = KeyPair.generate()
    ledger.fund(key.address, FUNDS)
    # the provider's node settles on its own ledger object; the renter opens channels here
    renter = RenterManager(tmp_path / "renter", [node.pinned_url], key=key, ledger=ledger)
    small_disk.fill()
    with pytest.raises(WalnutError) as err:
        await renter.launch(node.pinned_url, "cpu-small", budget_mist=BUDGET)
    assert err.value.status == 503
    assert err.value.message == "the local ledger is unavailable: database or disk is full"
    assert renter.store.list() == [] and node.store.list() == []
    assert ledger.balance(key.address) == FUNDS  # nothing moved
    small_disk.free()
    intact(ledger.path)
    channel = ledger.open_channel(key, node.identity.address, key.public_key, BUDGET,
                                 1000, 60)
    assert ledger.balance(key.address) == FUNDS - BUDGET  # and it works again
    assert ledger.get_channel(channel.channel_id).deposited == BUDGET
    ledger.close()


async def test_full_disk_under_the_renters_state_is_a_clear_error(stack_factory, ledger,
                                                                  small_disk):
    node = stack_factory()
    key = KeyPair.generate()
    ledger.fund(key.address, FUNDS)
    renter = RenterManager(small_disk.path / "renter", [node.pinned_url], key=key,
                           ledger=ledger)
    small_disk.fill()
    with pytest.raises(WalnutError) as err:
        await renter.launch(node.pinned_url, "cpu-small", budget_mist=BUDGET)
    assert err.value.status == 507
    assert err.value.message == (f"no space left on the disk holding {renter.store.path}: "
                                 "free some space and try again")
    # found before anything moved: no channel, no session on the provider
    assert ledger.balance(key.address) == FUNDS and node.store.list() == []
    small_disk.free()
    intact(renter.store.path)
    session = await renter.launch(node.pinned_url, "cpu-small", budget_mist=BUDGET)
    assert session.status == "running"
    await renter.stop(session.id)


async def test_a_session_the_renter_cannot_record_is_stopped_and_refunded(stack_factory,
                                                                          ledger, small_disk):
    node = stack_factory(config=provider_config(
        provider={"name": "disk-node", "runtime": stack_runtime()},
        settlement={"settle_after_s": 0}))
    key = KeyPair.generate()
    ledger.fund(key.address, FUNDS)
    renter = RenterManager(small_disk.path / "renter", [node.pinned_url], key=key,
                           ledger=ledger)

    def disk_fills_once_the_channel_is_open(step: str) -> None:
        if step == "starting session container":
            small_disk.fill(renter.store.path)

    with pytest.raises(WalnutError) as err:
        await renter.launch(node.pinned_url, "cpu-small", budget_mist=BUDGET,
                            on_progress=disk_fills_once_the_channel_is_open)
    assert err.value.status == 507
    # the provider's session was stopped at once, and its channel is settled for nothing
    [record] = node.store.list()
    assert record.status in ("stopped", "failed")  # stopped while its gateway was starting
    assert gateways(node) == []
    while not ledger.get_channel(record.channel_id).closed:
        node.run(node.sessions.settle_once())
    channel = ledger.get_channel(record.channel_id)
    assert channel.claimed == 0 and channel.refunded == BUDGET
    assert ledger.balance(key.address) == FUNDS
    small_disk.free()


async def test_full_disk_under_the_providers_state_refuses_new_sessions(stack_factory,
                                                                        ledger, small_disk):
    node = stack_factory(state_dir=small_disk.path / "provider")
    key = KeyPair.generate()
    client = node.client(key)
    channel = open_channel(ledger, key, node)
    small_disk.fill()
    with pytest.raises(ProviderAPIError) as err:
        await client.create_session(image="python", channel_id=channel)
    assert err.value.status == 507
    # the renter learns it is the provider's disk, not where the provider keeps its state
    assert err.value.message == STORAGE_ANSWERS[507]
    assert str(node.store.path.parent) not in err.value.message
    assert node.store.list() == []
    assert gateways(node) == []  # no gateway left running
    refunded = ledger.get_channel(channel)  # the provider closed the channel it cannot serve
    assert refunded.closed and refunded.refunded == refunded.deposited and not refunded.claimed
    small_disk.free()
    intact(node.store.path)
    channel = open_channel(ledger, key, node)
    created = await client.create_session(image="python", channel_id=channel)
    await client.wait_running(created["id"])
    await client.stop_session(created["id"])


async def test_a_session_stops_on_a_full_disk_and_is_recorded_once_space_returns(
        stack_factory, ledger, small_disk):
    node = stack_factory(state_dir=small_disk.path / "provider")
    key = KeyPair.generate()
    client = node.client(key)
    created = await client.create_session(image="python", channel_id=open_channel(ledger, key,
                                                                                  node))
    await client.wait_running(created["id"])
    small_disk.fill(node.store.path)
    node.run(node.sessions.meter_once())  # metering cannot write: the time is kept, not lost
    stopped = await client.stop_session(created["id"])
    assert stopped["status"] == "stopped"  # the renter is told the truth...
    assert gateways(node) == []  # ...and the gateway really stopped
    assert node.store.get(created["id"]).status == "running"  # not on disk yet
    small_disk.free()
    node.run(node.sessions.meter_once())
    record = node.store.get(created["id"])
    assert record.status == "stopped" and record.reason == "stopped by renter"
    assert record.running_ms >= stopped["running_seconds"] * 1000  # no metered time lost
    intact(node.store.path)


def test_walnut_provider_serve_on_a_full_disk_exits_with_one_line(small_disk, tmp_path):
    cli = [sys.executable, "-m", "jupyter_walnut.provider.cli", "--home",
           str(small_disk.path / "prov")]
    env = {**os.environ, "WALNUT_LEDGER": str(tmp_path / "ledger.sqlite")}
    assert subprocess.run([*cli, "init"], env=env, capture_output=True).returncode == 0
    small_disk.fill()
    done = subprocess.run([*cli, "serve", "--port", "0", "--runtime", "process"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("walnut-provider: no space left on the disk holding"), done.stderr
    assert "Traceback" not in done.stderr
