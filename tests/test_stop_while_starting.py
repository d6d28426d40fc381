"""A session stopped while its gateway is still starting stays stopped: its gateway is stopped
when it comes up, it is never marked running and never metered again.

A renter may stop (or its launch may fail and stop) a session at any moment. Here the stop
lands while the runtime is starting the gateway, before the provider holds a handle to stop.
On the default stack (Docker + TLS); `WALNUT_TEST_RUNTIME=process` runs the cheap leg.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import open_channel
from stack import StackNode

from jupyter_walnut.common.keys import KeyPair

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


async def test_a_stop_during_the_gateway_start_leaves_nothing_running(tmp_path, ledger):
    node = StackNode(tmp_path / "provider", ledger)
    try:
        runtime = node.sessions.runtime
        real_start = runtime.start
        starting, release = threading.Event(), threading.Event()

        async def held_start(spec):  # the runtime is slow to start this gateway
            starting.set()
            await asyncio.to_thread(release.wait, 120)
            return await real_start(spec)

        runtime.start = held_start
        key = KeyPair.generate()
        client = node.client(key)
        created = await client.create_session(image="python",
                                              channel_id=open_channel(ledger, key, node))
        assert await asyncio.to_thread(starting.wait, 120)
        stopped = await client.stop_session(created["id"])  # no handle to stop yet
        assert stopped["status"] == "stopped"
        release.set()

        async def starts_done() -> None:  # the provider's own start task ends
            await asyncio.gather(*list(node.sessions._tasks), return_exceptions=True)

        node.run(starts_done())
        record = node.store.get(created["id"])
        assert record.status == "stopped" and record.reason == "stopped by renter"
        assert node.run(runtime.adopt()) == []  # the gateway that came up was stopped
        node.run(node.sessions.meter_once())  # nothing is metered after the stop
        assert node.store.get(created["id"]).running_ms == record.running_ms
        assert (await client.get_session(created["id"]))["status"] == "stopped"
    finally:
        node.stop()
