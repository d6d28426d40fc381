"""A real provider node on loopback (process runtime): sessions, the gateway proxy, kernels."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from conftest import open_channel
from kernel_ws import KernelWS
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.renter.provider_client import ProviderAPIError, ProviderClient

pytestmark = pytest.mark.asyncio


async def running_session(provider, key, **request):
    client = ProviderClient(provider.url, key)
    channel = open_channel(provider.ledger, key, provider)
    created = await client.create_session(image="python", channel_id=channel, **request)
    await client.wait_running(created["id"])
    return client, created


async def test_status_describes_the_offer(provider):
    status = await ProviderClient(provider.url, KeyPair.generate()).status()
    assert status["node"] == "test-node"
    assert status["provider_address"] == provider.identity.address
    assert status["hardware"]["cpu_count"] >= 1
    small = next(s for s in status["shapes"] if s["name"] == "cpu-small")
    assert small["price_mist_per_second"] == 1000
    assert small["price_mist_per_hour"] == 3_600_000
    assert small["available"] is True
    # this machine has no GPU: the GPU shape is offered but not available, no traceback
    gpu = next(s for s in status["shapes"] if s["name"] == "gpu-1")
    assert gpu["available"] is (len(status["hardware"]["gpus"]) > 0)
    assert status["capacity"]["max_sessions"] == 3


async def test_session_runs_code_and_stops(provider, renter_key):
    client, created = await running_session(provider, renter_key, shape="cpu-small")
    sid, token = created["id"], created["access_token"]
    assert "gateway_token" not in created
    kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})
    conn = await client.kernel_websocket(sid, token, kernel["id"])
    result = await KernelWS(conn).execute("import os; print(6 * 7, os.getcwd())")
    assert result.status == "ok"
    value, cwd = result.stdout.split()
    assert value == "42"
    assert sid in cwd  # the session's own workspace
    conn.close()
    pid = int(provider.store.get(sid).runtime_ref)
    stopped = await client.stop_session(sid)
    assert stopped["status"] == "stopped"
    assert stopped["running_seconds"] == provider.store.get(sid).running_ms // 1000
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProviderAPIError) as err:
        await client.gateway(sid, token, "GET", "api/kernels")
    assert err.value.status == 409


async def test_interrupt_a_long_running_cell(provider, renter_key):
    client, created = await running_session(provider, renter_key)
    sid, token = created["id"], created["access_token"]
    kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})
    ws = KernelWS(await client.kernel_websocket(sid, token, kernel["id"]))
    started = asyncio.Event()
    running = asyncio.ensure_future(ws.execute(
        "import time\nprint('start', flush=True)\ntime.sleep(120)",
        on_message=lambda m: m["header"]["msg_type"] == "stream" and started.set()))
    await asyncio.wait_for(started.wait(), 30)  # the cell really runs: it printed
    await client.gateway(sid, token, "POST", f"api/kernels/{kernel['id']}/interrupt")
    result = await asyncio.wait_for(running, 30)
    assert result.status == "error"
    assert result.error["ename"] == "KeyboardInterrupt"
    assert (await ws.execute("print('alive')")).stdout == "alive\n"


async def test_a_kernel_that_dies_mid_cell_restarts_and_says_why(provider, renter_key):
    client, created = await running_session(provider, renter_key)
    sid, token = created["id"], created["access_token"]
    kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})
    path = f"api/kernels/{kernel['id']}"
    ws = KernelWS(await client.kernel_websocket(sid, token, kernel["id"]))
    assert (await ws.execute("lost = 1")).status == "ok"
    # the renter's client hears "restarting" (JupyterLab's "the kernel appears to have died")
    outcome, _ = await ws.execute_until_restart("import os\nos._exit(1)")
    assert outcome == "restarting"
    model = await client.gateway(sid, token, "GET", path)
    assert model["reason"] == "The kernel died and was restarted; its variables are gone."
    # the model leaves "restarting" once the new kernel answers, with no request of ours
    # (a stock gateway kept the dead kernel's "busy" until the next cell)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while model["execution_state"] != "idle":
        assert model["execution_state"] == "restarting", model
        assert loop.time() < deadline, model
        await asyncio.sleep(0.2)  # polling the gateway's model; bounded by the deadline
        model = await client.gateway(sid, token, "GET", path)
    ws.conn.close()  # and reconnects, as JupyterLab does after "restarting"
    ws = KernelWS(await client.kernel_websocket(sid, token, kernel["id"]))
    result = await ws.execute("print('lost' in globals())")
    assert result.stdout == "False\n"


async def test_v1_subprotocol_passes_through(provider, renter_key):
    client, created = await running_session(provider, renter_key)
    sid, token = created["id"], created["access_token"]
    kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})
    conn = await client.kernel_websocket(sid, token, kernel["id"],
                                         subprotocols=["v1.kernel.websocket.jupyter.org"])
    assert conn.selected_subprotocol == "v1.kernel.websocket.jupyter.org"
    conn.close()


async def test_two_renters_are_isolated(provider):
    alice, bob = KeyPair.generate(), KeyPair.generate()
    a_client, a = await running_session(provider, alice)
    b_client, b = await running_session(provider, bob)
    # bob cannot see, stop or read alice's session through the API
    assert [s["id"] for s in await b_client.list_sessions()] == [b["id"]]
    with pytest.raises(ProviderAPIError) as err:
        await b_client.get_session(a["id"])
    assert err.value.status == 404
    with pytest.raises(ProviderAPIError) as err:
        await b_client.stop_session(a["id"])
    assert err.value.status == 404
    # bob's session token does not open alice's gateway, over REST or websocket
    with pytest.raises(ProviderAPIError) as err:
        await b_client.gateway(a["id"], b["access_token"], "GET", "api/kernels")
    assert err.value.status == 403
    kernel = await a_client.gateway(a["id"], a["access_token"], "POST", "api/kernels", {})
    with pytest.raises(Exception) as err:
        await b_client.kernel_websocket(a["id"], b["access_token"], kernel["id"])
    assert isinstance(err.value, HTTPClientError) and err.value.code == 403
    assert (await a_client.get_session(a["id"]))["status"] == "running"


async def test_capacity_shapes_and_images_are_enforced(provider, renter_key):
    client = ProviderClient(provider.url, renter_key)
    balance = provider.ledger.balance(renter_key.address)
    for request, status, words in [
        ({"image": "nope"}, 400, "unknown image 'nope'; this node offers: python"),
        ({"image": "python", "shape": "huge"}, 400,
         "unknown shape 'huge'; this node offers: cpu-small, gpu-1"),
        ({"image": "python", "gpus": 1}, 409, "shape 'gpu-1' needs 1 GPU(s); 0 free"),
        ({"image": "python", "cpus": 64}, 400,
         "no shape on this node gives gpus=0, cpus=64, memory_mb=0"),
        ({"image": "python", "max_seconds": 10**9}, 400,
         "max_seconds: this node allows at most 86400"),
        ({"image": "python", "bogus": 1}, 400, "unknown field: bogus"),
        ({"image": "python", "memory_mb": "lots"}, 400,
         "memory_mb: must be an integer from 64 to 1099511627776, written with the digits "
         "0-9 only"),
    ]:
        price = 50_000 if request.get("gpus") else 1000  # pay the GPU shape's price
        channel = open_channel(provider.ledger, renter_key, provider, price=price,
                               deposit=price * 600)
        with pytest.raises(ProviderAPIError) as err:
            await client.create_session(channel_id=channel, **request)
        assert err.value.status == status, request
        assert err.value.message == words, request
    assert await client.list_sessions() == []  # nothing started or left behind
    balance = provider.ledger.balance(renter_key.address)
    for _ in range(3):
        await client.create_session(image="python",
                                    channel_id=open_channel(provider.ledger, renter_key, provider))
    channel = open_channel(provider.ledger, renter_key, provider)
    with pytest.raises(ProviderAPIError) as err:
        await client.create_session(image="python", channel_id=channel)
    assert err.value.status == 409
    assert err.value.message == "node is at capacity (3 sessions)"
    # a refused session's deposit comes back at once: the provider closed its channel
    assert provider.ledger.get_channel(channel).refunded == 600_000
    locked = 3 * 600_000
    assert provider.ledger.balance(renter_key.address) == balance - locked


async def test_bad_requests_get_clear_4xx(provider, renter_key):
    http = AsyncHTTPClient()
    base = provider.url + "/api/v1"

    async def call(method, path, body=None, headers=None):
        resp = await http.fetch(HTTPRequest(base + path, method=method, body=body,
                                            headers=headers or {},
                                            allow_nonstandard_methods=True), raise_error=False)
        return resp.code, json.loads(resp.body)["error"]["message"]

    code, msg = await call("POST", "/sessions", b"{}")
    assert code == 401 and "missing signature" in msg
    from jupyter_walnut.common.signed_requests import sign_request

    def sign(*args, **kwargs):  # on plain HTTP a request names the provider's address
        return sign_request(renter_key, *args, audience=provider.identity.address, **kwargs)

    body = b"not json"
    code, msg = await call("POST", "/sessions", body,
                           sign("POST", "/api/v1/sessions", body))
    assert code == 400 and "JSON" in msg
    # a signature over another body is refused
    headers = sign("POST", "/api/v1/sessions", b'{"image":"python"}')
    code, msg = await call("POST", "/sessions", b'{"image":"other"}', headers)
    assert code == 401 and "bad request signature" in msg
    # replaying a valid request is refused
    body = b'{"image":"nope"}'
    headers = sign("POST", "/api/v1/sessions", body)
    assert (await call("POST", "/sessions", body, headers))[0] == 400
    code, msg = await call("POST", "/sessions", body, headers)
    assert code == 401 and "replayed" in msg
    # an expired signature
    headers = sign("GET", "/api/v1/sessions", b"", now=1_000_000)
    code, msg = await call("GET", "/sessions", None, headers)
    assert code == 401 and "window" in msg
    code, msg = await call("POST", "/sessions", b"x" * (2 * 1024 * 1024),
                           sign("POST", "/api/v1/sessions", b""))
    assert code == 413
    code, msg = await call("GET", "/nowhere")
    assert code == 404 and "no such endpoint" in msg
    code, msg = await call("GET", "/sessions/s-0123456789abcdef/gateway/api/kernels")
    assert code == 401 and "session token" in msg
    code, msg = await call("GET", "/sessions/s-0123456789abcdef/gateway/api/kernels",
                           headers={"Authorization": "token wrong"})
    assert code == 403
    assert provider.store.list() == []


async def test_failed_gateway_is_reported_and_freed(provider_factory, tmp_path, renter_key):
    from jupyter_walnut.provider.runtimes.process import ProcessRuntime

    broken = ProcessRuntime(tmp_path / "broken", python="/bin/false")
    node = await provider_factory(runtime=broken)
    client = ProviderClient(node.url, renter_key)
    channel = open_channel(node.ledger, renter_key, node)
    before = node.ledger.balance(renter_key.address)
    created = await client.create_session(image="python", channel_id=channel)
    with pytest.raises(ProviderAPIError) as err:
        await client.wait_running(created["id"])
    reason = "gateway exited during start: gateway process exited with code 1"
    assert err.value.message == f"session failed: {reason}"
    session = await client.get_session(created["id"])
    assert session["status"] == "failed" and session["reason"] == reason
    assert (await client.status())["capacity"]["active_sessions"] == 0
    # nothing charged for a session that never ran: the whole deposit comes back
    while not node.ledger.get_channel(channel).closed:
        await node.sessions.settle_once()
    assert node.ledger.get_channel(channel).claimed == 0
    assert node.ledger.balance(renter_key.address) == before + 600_000


async def test_dead_gateway_fails_the_session(provider, renter_key):
    client, created = await running_session(provider, renter_key)
    pid = int(provider.store.get(created["id"]).runtime_ref)
    os.killpg(pid, 9)
    while (await client.get_session(created["id"]))["status"] == "running":
        await asyncio.sleep(0.05)
    session = await client.get_session(created["id"])
    assert session["status"] == "failed"
    assert "gateway died" in session["reason"]


async def test_metering_persists_and_costs_exact_mist(provider, renter_key):
    client, created = await running_session(provider, renter_key)
    sid = created["id"]
    while provider.store.get(sid).running_ms < 500:
        await asyncio.sleep(0.05)
    session = await client.stop_session(sid)
    rec = provider.store.get(sid)
    assert rec.running_ms >= 500
    assert session["cost_mist"] == rec.running_ms * 1000 // 1000
    assert isinstance(session["cost_mist"], int)
    frozen = rec.running_ms
    await provider.sessions.meter_once()
    assert provider.store.get(sid).running_ms == frozen  # nothing metered after the stop


async def test_session_reports_live_usage(provider, renter_key):
    client, created = await running_session(provider, renter_key)
    session = await client.get_session(created["id"])
    usage = session["usage"]
    assert usage["memory_used_mb"] > 10  # the gateway's Python is resident
    assert isinstance(usage["cpu_pct"], float)
    assert 0.0 <= usage["cpu_pct"] <= 100.0 * session["cpus"]  # a share of its own CPUs
    assert "gpu_utilization_pct" not in usage  # no GPU given to this session


async def test_metrics_endpoint(provider, renter_key):
    await running_session(provider, renter_key)
    resp = await AsyncHTTPClient().fetch(provider.url + "/metrics")
    text = resp.body.decode()
    assert 'walnut_sessions{status="running"} 1.0' in text
    assert "walnut_sessions_started_total 1.0" in text


async def test_openapi_document_ships_and_names_every_route(provider):
    import yaml

    resp = await AsyncHTTPClient().fetch(provider.url + "/api/v1/openapi.yaml")
    doc = yaml.safe_load(resp.body)
    assert doc["openapi"].startswith("3.")
    for path in ("/api/v1/status", "/api/v1/sessions", "/api/v1/sessions/{session_id}",
                 "/api/v1/sessions/{session_id}/vouchers", "/api/v1/sessions/{session_id}/topup",
                 "/api/v1/sessions/{session_id}/jobs", "/api/v1/sessions/{session_id}/jobs/"
                 "{job_id}", "/api/v1/sessions/{session_id}/jobs/{job_id}/results", "/metrics"):
        assert path in doc["paths"]
