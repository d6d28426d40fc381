"""The launch as a visible pipeline (issue #14): through the renter's real Jupyter Server on
the default stack (Docker sessions, TLS with a pinned certificate), every step of a launch
is recorded with the session and answered by the /walnut API the sidebar reads; a launch
stopped by the hardware check says so at that step, runs no later one, and is refunded."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import provider_config
from stack import StackNode, renter_server_config, stack_runtime
from test_verify import HOST_CPUS, PRICE, SETTLE, CheatingNode, settled_event, shape
from tornado.httpclient import HTTPClientError

from jupyter_walnut.renter.launch import STEPS as ALL_STEPS

# a launch without requirements has no "environment" step (issue #15), one without a
# folder no "workspace" step (issue #16)
STEPS = tuple(step for step in ALL_STEPS if step not in ("environment", "workspace"))

pytestmark = pytest.mark.timeout(240)

BUDGET = 300 * PRICE


@pytest.fixture
def node_kind() -> type[StackNode]:
    return StackNode  # a test parametrizes a hostile one


@pytest.fixture
def node(tmp_path, ledger, node_kind):
    # an honest node sells the CPUs it has, the cheating one gives half of them; a process
    # cannot be limited, so on that leg the cheating offer alone lies
    lies = node_kind is CheatingNode and stack_runtime() != "docker"
    cpus = HOST_CPUS + 6 if lies else HOST_CPUS
    config = provider_config(provider={"name": "steps-node", "runtime": stack_runtime()},
                             settlement=SETTLE, shapes=[shape("fair", cpus)])
    started = node_kind(tmp_path / "provider", ledger, config=config)
    yield started
    started.stop()


@pytest.fixture
def jp_server_config(node, tmp_path, ledger):
    return renter_server_config(tmp_path / "renter", ledger.path, [node.pinned_url])


async def launch(jp_fetch, node):
    return await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": node.pinned_url, "shape": "fair", "budget_mist": BUDGET}),
        request_timeout=180)


async def sessions(jp_fetch) -> list[dict]:
    return json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"]


async def test_a_launch_records_every_step_done_in_order(jp_fetch, node):
    created = json.loads((await launch(jp_fetch, node)).body)

    fetched = json.loads((await jp_fetch("walnut", "sessions", created["id"])).body)
    [listed] = await sessions(jp_fetch)
    for session in (created, fetched, listed):
        assert [(s["step"], s["state"]) for s in session["launch"]] == \
            [(step, "done") for step in STEPS]
    steps = {s["step"]: s for s in fetched["launch"]}
    assert steps["open_channel"]["detail"] == fetched["channel_id"]
    assert steps["create_session"]["detail"] == fetched["id"]
    assert steps["kernelspec"]["detail"] == fetched["kernel_name"]
    times = [s["at"] for s in fetched["launch"]]
    assert times == sorted(times)
    await jp_fetch("walnut", "sessions", created["id"], method="DELETE")


@pytest.mark.parametrize("node_kind", [CheatingNode])
async def test_a_launch_failing_the_check_records_verify_failed_and_is_refunded(
        jp_fetch, node, ledger):
    settled = settled_event(node)

    with pytest.raises(HTTPClientError) as caught:
        await launch(jp_fetch, node)

    assert caught.value.code == 409
    answer = json.loads(caught.value.response.body)["message"]
    [session] = await sessions(jp_fetch)
    assert [(s["step"], s["state"]) for s in session["launch"]] == \
        [(step, "done") for step in STEPS[:4]] + [("verify", "failed")]  # no kernelspec
    failed = session["launch"][-1]
    assert failed["detail"] == answer
    assert failed["detail"].startswith("verification failed: ")
    assert "CPUs, the container has" in failed["detail"]
    assert session["status"] == "stopped"
    # the money: the provider claims the check's seconds and the rest comes back
    assert await asyncio.to_thread(settled.wait, 60), "the provider never settled"
    channel = ledger.get_channel(session["channel_id"])
    assert channel.closed
    assert 0 < channel.claimed < BUDGET
    assert channel.refunded == BUDGET - channel.claimed
