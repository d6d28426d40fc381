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
def renter_home(tmp_path, ledger):
    """The renter's Walnut home with a wallet funded on the shared local ledger."""
    from jupyter_walnut.common.keys import KeyPair

    home = tmp_path / "renter"
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    ledger.fund(key.address, 10**12)
    return home


@pytest.fixture
def jp_server_config(provider, renter_home, ledger):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [provider.url], "walnut_home": str(renter_home),
                          "ledger_path": str(ledger.path), "poll_interval": 0.2,
                          "challenge_period": 60}}


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


async def test_a_remote_kernel_that_dies_is_restarted_and_the_browser_is_told(
        jp_fetch, jp_ws_fetch, provider):
    session = await launch(jp_fetch, provider)
    kernel = await start_kernel(jp_fetch, session["kernel_name"])
    ws = await open_ws(jp_ws_fetch, kernel["id"])
    await ws.execute("state = 'lost'")
    # what JupyterLab turns into "Kernel Restarting: the kernel appears to have died"
    outcome, _ = await ws.execute_until_restart("import os\nos._exit(1)")
    assert outcome == "restarting"
    # JupyterLab answers "restarting" by reconnecting its websocket (the server then waits
    # until the new kernel's output channel is live); the same local kernel id goes on, on
    # a fresh remote kernel in the same paid session
    ws.conn.close()
    ws = await open_ws(jp_ws_fetch, kernel["id"])
    result = await ws.execute("print('state' in dir())")
    assert result.stdout == "False\n"
    kernels = json.loads((await jp_fetch("api", "kernels")).body)
    assert [k["id"] for k in kernels] == [kernel["id"]]
    assert len(provider.store.list()) == 1 and provider.store.list()[0].status == "running"


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
    from jupyter_walnut.renter.kernel.provisioner import WalnutKernelError, WalnutProvisioner

    provisioner = WalnutProvisioner(kernel_id="k", kernel_spec=None,
                                    walnut_session=session["id"])
    with pytest.raises(WalnutKernelError, match="is stopped: stopped by the provider"):
        await provisioner.launch_kernel([])
    assert len(provider.store.list()) == 1


async def test_launch_errors_are_clear(jp_fetch, provider):
    balance = json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"]
    for body, status, words in [
        ({"provider_url": "http://127.0.0.1:1", "shape": "cpu-small"}, 400, "unknown provider"),
        ({"provider_url": provider.url, "shape": "nope"}, 400, "no shape"),
        ({"provider_url": provider.url, "shape": "gpu-1"}, 409, "GPU"),
        ({"provider_url": provider.url}, 400, "shape is required"),
        ({"provider_url": provider.url, "shape": "cpu-small", "budget_mist": -5}, 400,
         "positive"),
        ({"provider_url": provider.url, "shape": "cpu-small", "budget_mist": 1000}, 400,
         "at least 60000 MIST"),
        ({"provider_url": provider.url, "shape": "cpu-small", "budget_mist": 10**13}, 402,
         "insufficient balance"),
    ]:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(body))
        assert err.value.code == status, body
        assert words in json.loads(err.value.response.body)["message"], body
    # nothing launched, nothing charged: the one refused by the provider (no free GPU) is
    # listed as failed, and its deposit is back in the wallet
    while True:
        sessions = json.loads((await jp_fetch("walnut", "sessions")).body)["sessions"]
        if all(s["settlement"] == "settled" for s in sessions):
            break
        await asyncio.sleep(0.1)
    assert [(s["status"], s["claimed_mist"]) for s in sessions] == [("failed", 0)]
    assert "GPU" in sessions[0]["reason"]
    assert json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"] == balance


async def test_money_flows_from_wallet_to_provider_exactly(jp_fetch, provider, ledger):
    wallet = json.loads((await jp_fetch("walnut", "wallet")).body)
    assert wallet["network"] == "local"
    start_balance = wallet["balance_mist"]
    session = await launch(jp_fetch, provider, budget_mist=300_000)
    assert session["budget_mist"] == 300_000 and session["max_seconds"] == 300
    wallet = json.loads((await jp_fetch("walnut", "wallet")).body)
    assert wallet["balance_mist"] == start_balance - 300_000  # the deposit is locked
    # vouchers follow the metered cost while the session runs
    while provider.store.get(session["id"]).voucher_mist < 1000:
        await asyncio.sleep(0.05)
    topped = json.loads((await jp_fetch("walnut", "sessions", session["id"], "topup",
                                        method="POST", body=json.dumps({"amount_mist": 50_000})
                                        )).body)
    assert topped["budget_mist"] == 350_000
    resp = await jp_fetch("walnut", "sessions", session["id"], method="DELETE")
    stopped = json.loads(resp.body)
    assert stopped["status"] == "stopped"
    while True:
        s = json.loads((await jp_fetch("walnut", "sessions", session["id"])).body)
        if s["settlement"] == "settled":
            break
        await asyncio.sleep(0.1)
    channel = ledger.get_channel(s["channel_id"])
    cost = provider.store.get(session["id"]).cost_mist
    assert channel.claimed == cost == s["claimed_mist"]
    assert channel.deposited == 350_000 == channel.claimed + channel.refunded
    wallet = json.loads((await jp_fetch("walnut", "wallet")).body)
    assert wallet["balance_mist"] == start_balance - cost
    assert ledger.balance(provider.identity.address) == cost


async def test_fund_the_demo_wallet(jp_fetch):
    before = json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"]
    resp = await jp_fetch("walnut", "wallet", "fund", method="POST",
                          body=json.dumps({"amount_mist": 5 * 10**9}))
    assert json.loads(resp.body)["balance_mist"] == before + 5 * 10**9
    for body in ({"amount_mist": 0}, {"amount_mist": 1.5}, {}, {"amount_mist": "x"}):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("walnut", "wallet", "fund", method="POST", body=json.dumps(body))
        assert err.value.code == 400
    after = json.loads((await jp_fetch("walnut", "wallet")).body)["balance_mist"]
    assert after == before + 5 * 10**9


NOTEBOOK_CELLS = [
    "import sys, json\nprint('hello from', sys.version_info[0])",
    "from IPython.display import display, HTML\ndisplay(HTML('<b>bold</b>'))\n6 * 7",
    "import sys\nprint('to stderr', file=sys.stderr)",
    "data = {'a': [1, 2, 3]}\njson.dumps(data)",
    "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    print('caught', type(e).__name__)",
]


def _outputs(nb):
    keep = ("output_type", "name", "text", "data")
    return [[{k: o[k] for k in keep if k in o} for o in cell.outputs] for cell in nb.cells]


async def test_nbclient_through_the_servers_kernel_manager(jp_fetch, jp_serverapp, provider):
    """A server-side client (nbclient on the server's kernel manager) runs a notebook on a
    remote kernel, with the same outputs as on a local kernel."""
    import nbformat
    from nbclient import NotebookClient

    session = await launch(jp_fetch, provider)
    results = {}
    for name in (session["kernel_name"], "python3"):
        kernel = await start_kernel(jp_fetch, name)
        km = jp_serverapp.kernel_manager.get_kernel(kernel["id"])
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c)
                                             for c in NOTEBOOK_CELLS])
        await NotebookClient(nb, km=km, timeout=60).async_execute()
        results[name] = _outputs(nb)
    remote, local = results[session["kernel_name"]], results["python3"]
    assert remote == local
    assert remote[1][1]["data"]["text/plain"] == "42"
    assert remote[0][0]["text"].startswith("hello from 3")


class V1WS:
    """A kernel websocket client speaking the v1 binary protocol, as JupyterLab does."""

    def __init__(self, conn) -> None:
        import uuid

        self.conn = conn
        self.session = uuid.uuid4().hex

    async def send(self, channel, msg_type, content, buffers=()):
        import uuid

        from jupyter_walnut.common.jupyter_wire import to_ws_v1

        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "t",
                  "session": self.session, "date": "", "version": "5.3"}
        parts = [json.dumps(p).encode() for p in (header, {}, {}, content)]
        await self.conn.write_message(to_ws_v1(channel, [*parts, *buffers]), binary=True)
        return header["msg_id"]

    async def recv(self):
        from jupyter_walnut.common.jupyter_wire import from_ws_v1

        frame = await asyncio.wait_for(self.conn.read_message(), 30)
        channel, parts = from_ws_v1(frame)
        header, parent, _, content = (json.loads(p) for p in parts[:4])
        return channel, header, parent, content, parts[4:]

    async def until(self, predicate):
        while True:
            msg = await self.recv()
            if predicate(*msg):
                return msg


async def test_v1_protocol_comms_with_binary_buffers_and_debugger(jp_fetch, jp_ws_fetch,
                                                                  provider):
    session = await launch(jp_fetch, provider)
    kernel = await start_kernel(jp_fetch, session["kernel_name"])
    conn = await jp_ws_fetch("api", "kernels", kernel["id"], "channels",
                             subprotocols=["v1.kernel.websocket.jupyter.org"])
    assert conn.selected_subprotocol == "v1.kernel.websocket.jupyter.org"
    ws = V1WS(conn)
    # a comm target in the kernel that echoes the buffers it gets, reversed
    code = ("from comm import get_comm_manager\n"
            "def target(comm, msg):\n"
            "    @comm.on_msg\n"
            "    def _(m):\n"
            "        comm.send({'n': len(m['buffers'])},"
            " buffers=[bytes(b)[::-1] for b in m['buffers']])\n"
            "get_comm_manager().register_target('echo', target)")
    msg_id = await ws.send("shell", "execute_request", {"code": code, "silent": False})
    await ws.until(lambda ch, h, p, c, b: h["msg_type"] == "execute_reply"
                   and p.get("msg_id") == msg_id)
    await ws.send("shell", "comm_open", {"comm_id": "c1", "target_name": "echo", "data": {}})
    payload = bytes(range(256)) * 4
    await ws.send("shell", "comm_msg", {"comm_id": "c1", "data": {}}, buffers=[payload, b"\x00"])
    _, _, _, content, buffers = await ws.until(
        lambda ch, h, p, c, b: h["msg_type"] == "comm_msg" and c.get("comm_id") == "c1")
    assert content["data"] == {"n": 2}
    assert buffers == [payload[::-1], b"\x00"]
    # the debugger over the control channel
    msg_id = await ws.send("control", "debug_request",
                           {"type": "request", "seq": 1, "command": "initialize",
                            "arguments": {"adapterID": "python", "clientID": "walnut"}})
    channel, _, _, reply, _ = await ws.until(
        lambda ch, h, p, c, b: h["msg_type"] == "debug_reply" and p.get("msg_id") == msg_id)
    assert channel == "control" and reply["success"] is True
    conn.close()


async def test_browser_reconnect_loses_no_output(jp_fetch, jp_ws_fetch, provider, tmp_path):
    session = await launch(jp_fetch, provider)
    kernel = await start_kernel(jp_fetch, session["kernel_name"])
    import uuid

    ws_session = uuid.uuid4().hex
    conn = await jp_ws_fetch("api", "kernels", kernel["id"], "channels",
                             params={"session_id": ws_session})
    ws = KernelWS(conn)
    ws.session = ws_session
    from kernel_ws import message

    # the cell prints once, then goes on printing once the server holds the dropped tab's
    # output (the process runtime's kernel sees this machine's files)
    resume = tmp_path / "tab-dropped"
    code = ("import os, time\nprint('tick', 0, flush=True)\n"
            f"while not os.path.exists({str(resume)!r}):\n    time.sleep(0.05)\n"
            "for i in range(1, 6):\n    print('tick', i, flush=True)\n    time.sleep(0.1)")
    msg = message("execute_request", {"code": code, "silent": False}, ws_session)
    await ws.send(msg)
    first = await ws.recv()
    while first["header"]["msg_type"] != "stream":
        first = await ws.recv()
    conn.close()  # the browser tab drops while the cell keeps printing
    deadline = asyncio.get_running_loop().time() + 30
    while json.loads((await jp_fetch("api", "kernels", kernel["id"])).body)["connections"]:
        assert asyncio.get_running_loop().time() < deadline, "the server never saw the drop"
        await asyncio.sleep(0.05)
    resume.touch()
    conn = await jp_ws_fetch("api", "kernels", kernel["id"], "channels",
                             params={"session_id": ws_session})
    ws = KernelWS(conn)
    text = first["content"]["text"]
    while True:
        m = await ws.recv()
        if m["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if m["header"]["msg_type"] == "stream":
            text += m["content"]["text"]
        if m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    assert text == "".join(f"tick {i}\n" for i in range(6))  # all of it, once, in order


async def test_server_shutdown_stops_its_sessions(jp_fetch, jp_serverapp, provider):
    session = await launch(jp_fetch, provider)
    assert provider.store.get(session["id"]).status == "running"
    app = jp_serverapp.extension_manager.extension_apps["jupyter_walnut"]
    await next(iter(app)).stop_extension()
    assert provider.store.get(session["id"]).status == "stopped"
    assert provider.store.get(session["id"]).reason == "stopped by renter"
