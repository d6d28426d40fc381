"""Idle auto-stop (issue #17), on the default stack (Docker + pinned TLS) through the
renter's Jupyter Server, as the sidebar and `%walnut` see it:

- an idle session (a client attached, its kernel idle) is warned, its stop_in_s shrinking,
  "keep running" starts the clock again, then it stops with the idle reason and the renter
  pays only the metered time; attached but idle is unattended (docs/pages/away.md);
- a kernel running a long cell is never idle, however far past the threshold, and its idle
  clock starts when the cell finishes;
- the default threshold by price: the pricier shape's quote says it stops sooner;
- bad idle values: 400 with a message, nothing launched, nothing paid;
- a hostile renter's gateway (garbage, huge, slow, future times) never gets a session
  stopped before its threshold: played by a real HTTP server standing in for the gateway.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest
from conftest import provider_config
from stack import StackNode, renter_server_config
from tornado import httpserver, netutil, web
from tornado.httpclient import HTTPClientError

from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.provider.idle import IdleWatch
from jupyter_walnut.provider.store import SessionRecord, SessionStore

pytestmark = [pytest.mark.timeout(600)]

PRICE, PRICEY = 1000, 100_000  # MIST per second of the cheap and the expensive shape


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("idle")
    ledger = LocalLedger(tmp / "ledger.sqlite")
    config = provider_config(
        provider={"name": "idle-node", "runtime": "docker"},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": PRICE, "disk_mb": 256},
                {"name": "cpu-pricey", "gpus": 0, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": PRICEY, "disk_mb": 256}],
        availability={"max_sessions": 4})
    stack = StackNode(tmp / "provider", ledger, config=config)
    try:
        yield stack, tmp / "ledger.sqlite"
    finally:
        stack.stop()
        ledger.close()


@pytest.fixture
def jp_server_config(node, tmp_path):
    stack, ledger_path = node
    return renter_server_config(tmp_path / "renter", ledger_path, [stack.pinned_url],
                                RenterManager={"warn_minutes_before_end": 5,
                                               "verify_launches": False})


async def launch(jp_fetch, stack, **fields) -> dict:
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": stack.pinned_url, "shape": "cpu-small", "budget_mist": 600 * PRICE,
         **fields}), request_timeout=180)
    return json.loads(resp.body)


async def kernel_ws(jp_fetch, jp_ws_fetch, session: dict):
    from kernel_ws import KernelWS

    kernel = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps(
        {"name": session["kernel_name"]}))).body)
    return KernelWS(await jp_ws_fetch("api", "kernels", kernel["id"], "channels"))


async def session_json(jp_fetch, sid: str) -> dict:
    return json.loads((await jp_fetch("walnut", "sessions", sid)).body)


async def poll(jp_fetch, sid: str, until, timeout: float = 120) -> list[dict]:
    """The session's JSON as the sidebar polls it, every state seen, until `until(s)`."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        s = await session_json(jp_fetch, sid)
        seen.append(s)
        if until(s):
            return seen
        assert time.monotonic() < deadline, s
        await asyncio.sleep(0.2)  # polling the renter's server, bounded by the deadline


def idle_warnings(s: dict) -> list[dict]:
    return [w for w in s["warnings"] if w["kind"] == "idle"]


async def test_an_idle_session_is_warned_kept_then_stopped_paying_only_metered_time(
        jp_fetch, jp_ws_fetch, node):
    stack, _ = node
    s = await launch(jp_fetch, stack, idle_stop_minutes=0.25)  # 15 s; warned at 7.5 s
    assert s["extra"]["idle_stop_s"] == 15
    quote = next(st for st in s["launch"] if st["step"] == "quote")
    assert "stops after 15 s idle" in quote["detail"]
    ws = await kernel_ws(jp_fetch, jp_ws_fetch, s)  # attached, as an open notebook is
    assert (await ws.execute("x = 1")).status == "ok"

    seen = await poll(jp_fetch, s["id"], lambda c: bool(idle_warnings(c)))
    warning = idle_warnings(seen[-1])[0]
    assert warning["actions"] == ["keep_running"] and "if still idle" in warning["message"]
    lefts = [c["idle"]["stop_in_s"] for c in seen if c.get("idle")]
    assert lefts[-1] < lefts[0] <= 15  # the countdown shrinks
    provider = stack.sessions.idle.status(stack.store.get(s["id"]))
    assert provider["connections"] >= 1  # attached, yet idle: not attendance

    # "Keep running": the clock starts again and the warning goes away
    kept = json.loads((await jp_fetch("walnut", "sessions", s["id"], method="PATCH",
                                      body=json.dumps({"keep_running": True}))).body)
    assert kept["idle"]["stop_in_s"] > warning["seconds_left"] and not idle_warnings(kept)

    seen = await poll(jp_fetch, s["id"], lambda c: c["status"] != "running")
    final = seen[-1]
    assert final["status"] == "stopped" and final["reason"] == "idle for 15 s"
    assert any(idle_warnings(c) for c in seen)  # warned again before this stop
    # only the metered time is paid: the final voucher is the provider's metered cost
    await poll(jp_fetch, s["id"], lambda c: c["settlement"] == "settled")
    rec = stack.store.get(s["id"])
    assert 0 < rec.voucher_mist <= rec.cost_mist  # paid metered time, nothing more
    assert ws  # the client stayed attached all along


async def test_a_long_cell_is_never_idle_and_the_clock_starts_when_it_ends(
        jp_fetch, jp_ws_fetch, node):
    stack, _ = node
    s = await launch(jp_fetch, stack, idle_stop_minutes=0.1)  # 6 s
    ws = await kernel_ws(jp_fetch, jp_ws_fetch, s)
    # a cell three times the threshold long: its sleep is the workload, not a wait
    cell = asyncio.ensure_future(ws.execute("import time; time.sleep(18); print('done')",
                                            timeout=120))
    busy_seen = []
    while not cell.done():
        current = await session_json(jp_fetch, s["id"])
        assert current["status"] == "running", current["reason"]
        if current.get("idle"):
            busy_seen.append(current["idle"]["idle_s"])
        await asyncio.sleep(0.5)  # polling the renter's server while the cell runs
    result = await cell
    assert result.status == "ok" and result.stdout.strip() == "done"
    assert busy_seen and max(busy_seen) < 6  # never counted idle while busy
    assert stack.store.get(s["id"]).status == "running"  # outlived 3x its threshold
    seen = await poll(jp_fetch, s["id"], lambda c: c["status"] != "running")
    assert seen[-1]["reason"] == "idle for 6 s"


async def test_the_pricier_shape_stops_sooner_by_default(jp_fetch, node):
    stack, _ = node
    cheap = await launch(jp_fetch, stack)
    pricey = await launch(jp_fetch, stack, shape="cpu-pricey", budget_mist=60 * PRICEY)
    try:
        quotes = {s["shape"]: next(st["detail"] for st in s["launch"]
                                   if st["step"] == "quote") for s in (cheap, pricey)}
        # 0.05 SUI of idle time: 500 s at 100,000 MIST/s (clamped up to 10 min), 50,000 s
        # at 1,000 (clamped down to 3 h)
        assert "stops after 10 min idle" in quotes["cpu-pricey"], quotes
        assert "stops after 3.0 h idle" in quotes["cpu-small"], quotes
        assert stack.store.get(pricey["id"]).extra["idle_stop_s"] == 600
        assert stack.store.get(cheap["id"]).extra["idle_stop_s"] == 3 * 3600
        changed = json.loads((await jp_fetch("walnut", "sessions", cheap["id"],
                                             method="PATCH", body=json.dumps(
                                                 {"idle_stop_minutes": "off"}))).body)
        assert changed["idle"]["threshold_s"] == 0 and changed["idle"]["stop_in_s"] is None
        assert stack.store.get(cheap["id"]).extra["idle_stop_s"] == 0
    finally:
        for s in (cheap, pricey):
            await jp_fetch("walnut", "sessions", s["id"], method="DELETE",
                           request_timeout=200)


@pytest.mark.parametrize("value", [-1, "soon", True, 10**9, 0.0001, [5]])
async def test_bad_idle_values_are_refused_and_nothing_is_launched(jp_fetch, node, value):
    stack, _ = node
    before = json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"]
    balance = json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"]
    with pytest.raises(HTTPClientError) as err:
        await launch(jp_fetch, stack, idle_stop_minutes=value)
    assert err.value.code == 400
    assert "idle_stop_minutes" in json.loads(err.value.response.body)["message"]
    assert json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"] == before
    assert json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"] == balance


async def test_the_provider_refuses_bad_idle_values_itself(node):
    """A renter that skips its own server's checks meets the provider's."""
    from jupyter_walnut.common.keys import KeyPair
    from jupyter_walnut.renter.provider_client import ProviderAPIError

    stack, _ = node
    client = stack.client(KeyPair.generate())
    for bad in (-1, 7 * 24 * 3600 + 1, "x", True):
        with pytest.raises(ProviderAPIError) as err:
            await client.create_session(image="python", idle_stop_s=bad)
        assert err.value.status == 400 and "idle_stop_s" in err.value.message


# --- a hostile renter's gateway: a real HTTP server answering what an attacker chooses --


class Gateway(web.RequestHandler):
    answers: dict = {}

    def get(self, what: str) -> None:
        body = self.answers.get(what, "[]")
        if callable(body):
            body = body()
        self.set_header("Content-Type", "application/json")
        self.finish(body)


def record(sid: str, threshold: int) -> SessionRecord:
    long_ago = time.time() - 3600
    return SessionRecord(
        id=sid, renter="0x" + "1" * 64, renter_public_key="00" * 32, shape="cpu-small",
        image="python", gpus=[], cpus=1, memory_mb=512, price_mist_per_second=PRICE,
        max_seconds=3600, status="running", runtime="docker", gateway_token="t",
        access_token_hash="h", created_at=long_ago, started_at=long_ago,
        extra={"idle_stop_s": threshold})


IDLE_LONG_AGO = json.dumps([{"id": "k", "execution_state": "idle", "connections": 0,
                             "last_activity": "2000-01-01T00:00:00.000000Z"}])
GARBAGE = {
    "not JSON": "{{{",
    "not a list": json.dumps({"kernels": []}),
    "huge": lambda: "[" + ",".join(['{"execution_state": "idle"}'] * 200_000) + "]",
    "bad time": json.dumps([{"execution_state": "idle", "last_activity": "yesterday"}]),
    "bad state": json.dumps([{"execution_state": ["idle"], "last_activity": None}]),
    "nested": "[" * 100_000,
}


async def test_a_hostile_gateway_never_gets_a_session_stopped_early(tmp_path):
    stopped: list[tuple[str, str]] = []
    server = httpserver.HTTPServer(web.Application([(r"/api/(kernels|terminals)", Gateway)]))
    sock = netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sock)
    url = f"http://127.0.0.1:{sock[0].getsockname()[1]}"
    store = SessionStore(tmp_path / "sessions.sqlite")
    sid = "s-" + secrets.token_hex(8)
    store.insert(record(sid, threshold=1))

    class Handle:
        gateway_url = url

    async def stop(session_id: str, reason: str) -> None:
        stopped.append((session_id, reason))
        store.update(session_id, status="stopped", reason=reason)

    watch = IdleWatch(store, lambda _: Handle, stop, lambda _: False)
    watch._born = time.time() - 3600  # as if it had watched for an hour
    try:
        for name, body in GARBAGE.items():
            Gateway.answers = {"kernels": body}
            assert await watch.check_once() == [], name
            assert watch.status(store.get(sid))["idle_s"] == 0, name  # counted as not idle
        # a future activity time counts as now: the clock starts then, not earlier
        Gateway.answers = {"kernels": json.dumps([{"execution_state": "idle",
                                                   "last_activity": "2999-01-01T00:00:00Z"}])}
        assert await watch.check_once() == []
        # an honest idle answer after all that: stopped once its threshold has passed
        Gateway.answers = {"kernels": IDLE_LONG_AGO}
        deadline = time.monotonic() + 30
        while not stopped:
            await watch.check_once()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)  # the threshold (1 s) passing, bounded by the deadline
        assert stopped == [(sid, "idle for 1 s")]
    finally:
        server.stop()
        store.close()
