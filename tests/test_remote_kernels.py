"""A provider's kernel as a first-class kernel of a real Jupyter Server, through the
server's standard /api/kernels REST API and kernel websocket."""

from __future__ import annotations

import asyncio
import json

import pytest
from kernel_ws import KernelWS
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def provider(threaded_provider):
    return threaded_provider


@pytest.fixture
def jp_server_config(provider, tmp_path):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [provider.url], "walnut_home": str(tmp_path / "renter"),
                          "poll_interval": 0.2}}


async def launch(jp_fetch, provider, shape="cpu-small", **extra):
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": provider.url, "shape": shape, **extra}))
    assert resp.code == 201
    return json.loads(resp.body)


async def start_kernel(jp_fetch, name):
    resp = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    return json.loads(resp.body)


async def open_ws(jp_ws_fetch, kernel_id):
    conn = await jp_ws_fetch("api", "kernels", kernel_id, "channels",
                             max_message_size=256 * 1024 * 1024)
    return KernelWS(conn)


async def test_offers_list_the_provider(jp_fetch, provider):
    offers = json.loads((await jp_fetch("walnut", "offers")).body)["offers"]
    small = next(o for o in offers if o["shape"] == "cpu-small")
    assert small["node"] == "test-node"
    assert small["price_mist_per_second"] == 1000
    assert small["healthy"] and small["latency_ms"] >= 0


async def test_remote_kernel_through_the_standard_api(jp_fetch, jp_ws_fetch, provider):
    session = await launch(jp_fetch, provider)
    name = session["kernel_name"]
    specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    assert name in specs and "python3" in specs  # local kernels stay beside remote ones
    assert "walnut: test-node" in specs[name]["spec"]["display_name"]
    kernel = await start_kernel(jp_fetch, name)
    ws = await open_ws(jp_ws_fetch, kernel["id"])
    result = await ws.execute("import os; print(os.environ.get('WALNUT_SESSION_ID'))")
    assert result.stdout.strip() == session["id"]  # it really ran inside the session
    result = await ws.execute("1/0")
    assert result.status == "error" and result.error["ename"] == "ZeroDivisionError"
    assert any("ZeroDivisionError" in line for line in result.error["traceback"])
    result = await ws.execute("from IPython.display import Image, display\n"
                              "display({'image/png': 'iVBORw0KGgo='}, raw=True)\n21*2")
    assert result.displays[0]["image/png"] == "iVBORw0KGgo="
    assert result.results[0]["text/plain"] == "42"
    # input() over stdin
    result = await ws.execute("x = input('name? '); print('hi', x)", stdin=lambda p: "walnut")
    assert result.stdout == "hi walnut\n"
    # kernel_info, completion, inspection, history
    info = await ws.request("kernel_info_request", {})
    assert info["content"]["language_info"]["name"] == "python"
    comp = await ws.request("complete_request", {"code": "import o", "cursor_pos": 8})
    assert "os" in comp["content"]["matches"]
    insp = await ws.request("inspect_request", {"code": "len", "cursor_pos": 3,
                                                "detail_level": 0})
    assert insp["content"]["found"]
    hist = await ws.request("history_request", {"hist_access_type": "tail", "n": 10,
                                                "output": False, "raw": True})
    assert any("input('name? ')" in h[2] for h in hist["content"]["history"])
    # the control channel
    reply = await ws.request("kernel_info_request", {}, channel="control")
    assert reply["content"]["status"] == "ok"
    # the server sees it as an ordinary kernel
    kernels = json.loads((await jp_fetch("api", "kernels")).body)
    assert any(k["id"] == kernel["id"] and k["name"] == name for k in kernels)


async def test_interrupt_and_restart_mid_cell(jp_fetch, jp_ws_fetch, provider):
    session = await launch(jp_fetch, provider)
    kernel = await start_kernel(jp_fetch, session["kernel_name"])
    ws = await open_ws(jp_ws_fetch, kernel["id"])
    await ws.execute("state = 'kept'")
    started = asyncio.Event()
    cell = asyncio.ensure_future(ws.execute(
        "import time\nprint('go', flush=True)\ntime.sleep(300)",
        on_message=lambda m: m["header"]["msg_type"] == "stream" and started.set()))
    await asyncio.wait_for(started.wait(), 30)
    await jp_fetch("api", "kernels", kernel["id"], "interrupt", method="POST", body="")
    result = await asyncio.wait_for(cell, 30)
    assert result.error["ename"] == "KeyboardInterrupt"
    assert (await ws.execute("print(state)")).stdout == "kept\n"
    # restart while a cell runs: the same paid session, a fresh kernel process
    started = asyncio.Event()
    cell = asyncio.ensure_future(ws.execute(
        "import time\nprint('go', flush=True)\ntime.sleep(300)",
        on_message=lambda m: m["header"]["msg_type"] == "stream" and started.set()))
    await asyncio.wait_for(started.wait(), 30)
    await jp_fetch("api", "kernels", kernel["id"], "restart", method="POST", body="")
    cell.cancel()
    ws = await open_ws(jp_ws_fetch, kernel["id"])
    result = await ws.execute("print('state' in dir())")
    assert result.stdout == "False\n"
    sessions = json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"]
    assert len(sessions) == 1 and sessions[0]["status"] == "running"
    assert len(provider.store.list()) == 1  # no new paid session on the provider


async def test_large_output_passes_intact(jp_fetch, jp_ws_fetch, provider):
    session = await launch(jp_fetch, provider)
    kernel = await start_kernel(jp_fetch, session["kernel_name"])
    ws = await open_ws(jp_ws_fetch, kernel["id"])
    # one 50 MB message: a display with a 50 MB text payload
    result = await ws.execute("from IPython.display import display\n"
                              "display({'text/plain': 'x' * 50_000_000}, raw=True)",
                              timeout=120)
    assert result.status == "ok"
    assert len(result.displays[0]["text/plain"]) == 50_000_000
    # a lot of printed output is not rate-limited away
    result = await ws.execute("for i in range(20000): print('line', i, 'x' * 200)",
                              timeout=120)
    lines = result.stdout.splitlines()
    assert len(lines) == 20000 and lines[-1].startswith("line 19999")


async def test_stopping_the_session_kills_the_kernel_with_a_reason(jp_fetch, jp_ws_fetch,
                                                                    provider):
    session = await launch(jp_fetch, provider)
    kernel = await start_kernel(jp_fetch, session["kernel_name"])
    ws = await open_ws(jp_ws_fetch, kernel["id"])
    started = asyncio.Event()
    cell = asyncio.ensure_future(ws.execute(
        "import time\nprint('go', flush=True)\ntime.sleep(300)",
        on_message=lambda m: m["header"]["msg_type"] == "stream" and started.set()))
    await asyncio.wait_for(started.wait(), 30)
    # the provider ends the session (e.g. its owner stops it)
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
        provider.sessions.stop(session["id"], reason="stopped by the provider"), provider.loop))
    result = await asyncio.wait_for(cell, 30)  # no hang: the cell ends with the reason
    assert result.error["ename"] == "WalnutSessionEnded"
    assert "stopped by the provider" in result.stderr
    final = json.loads((await jp_fetch("walnut", "sessions", session["id"])).body)
    assert final["status"] == "stopped"
    specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    assert session["kernel_name"] not in specs
    # the kernel is listed as dead, not restarted in a loop
    kernels = json.loads((await jp_fetch("api", "kernels")).body)
    assert [k["execution_state"] for k in kernels if k["id"] == kernel["id"]] == ["dead"]
    # and no new kernel can start on the ended session, paid or not
    from jupyter_walnut.kernel.provisioner import WalnutKernelError, WalnutProvisioner

    provisioner = WalnutProvisioner(kernel_id="k", kernel_spec=None, connection_info={},
                                    walnut_session=session["id"])
    with pytest.raises(WalnutKernelError, match="is stopped: stopped by the provider"):
        await provisioner.launch_kernel([])
    assert len(provider.store.list()) == 1


async def test_launch_errors_are_clear(jp_fetch, provider):
    for body, status, words in [
        ({"provider_url": "http://127.0.0.1:1", "shape": "cpu-small"}, 400, "unknown provider"),
        ({"provider_url": provider.url, "shape": "nope"}, 400, "no shape"),
        ({"provider_url": provider.url, "shape": "gpu-1"}, 409, "GPU"),
        ({"provider_url": provider.url}, 400, "shape is required"),
        ({"provider_url": provider.url, "shape": "cpu-small", "budget_mist": -5}, 400,
         "positive"),
    ]:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(body))
        assert err.value.code == status, body
        assert words in json.loads(err.value.response.body)["message"], body
    sessions = json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"]
    assert sessions == []  # nothing launched, nothing charged
