"""A terminal in a session, through the renter's own Jupyter Server (issue #16).

A real JupyterLab with jupyter_walnut (tests/ui_helpers.py) rents Docker sessions behind TLS
with a pinned certificate from a real provider node (tests/stack.py); the terminal is
jupyter_server_terminals' API and websocket at `/walnut/sessions/<sid>/`, as JupyterLab's
terminal widget opens it. The shell runs in the session (its hostname, its env), a second
session's token does not open the first's terminal, the terminal ends with its session, and
in Chromium the Terminal command of a session card opens a working terminal.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from stack import StackNode
from ui_helpers import WalnutStack, free_port, http_json, wait_until

from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.store import RenterStore

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

DONE = "WALNUT-TERMINAL-DONE"


@pytest.fixture(scope="module")
def lab():
    """(stack, node, [session A, session B]): two running sessions of one renter."""
    root = Path(tempfile.mkdtemp(prefix="walnut-terminal-"))
    ledger = LocalLedger(root / "ledger.sqlite")  # the file the renter's JupyterLab uses
    node = StackNode(root / "stack-provider", ledger)
    try:
        with WalnutStack(root, provider_url=node.pinned_url) as stack:
            stack.api("wallet/fund", "POST", {"amount_mist": 10**10})
            sessions = [stack.api("sessions", "POST", {"provider_url": node.pinned_url,
                                                       "shape": "cpu-small"})
                        for _ in range(2)]
            yield stack, node, sessions
    finally:
        node.stop()
        ledger.close()
        shutil.rmtree(root, ignore_errors=True)


def access_token(stack: WalnutStack, session_id: str) -> str:
    """What the renter's server holds for a session (the browser never sees it)."""
    store = RenterStore(stack.root / "renter" / "renter.sqlite")
    try:
        return store.get(session_id).access_token
    finally:
        store.close()


def http(url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None,
         context=None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def renter(stack: WalnutStack, path: str, method: str = "GET", token: str | None = None):
    headers = {"Authorization": f"token {token or stack.token}"} if token != "" else {}
    body = b"{}" if method == "POST" else None
    return http(f"{stack.base_url}walnut/sessions/{path}", method, headers, body)


def login_cookie(stack: WalnutStack) -> str:
    """The cookies a browser gets by opening JupyterLab with the token once."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(f"{stack.lab_url}", timeout=60):
        pass
    jar = opener.handlers[[type(h).__name__ for h in opener.handlers].index(
        "HTTPCookieProcessor")].cookiejar
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def new_terminal(stack: WalnutStack, session_id: str) -> str:
    status, body = renter(stack, f"{session_id}/api/terminals", "POST")
    assert status == 200, body
    return json.loads(body)["name"]


async def _socket(url: str, headers: dict):
    from tornado import httpclient, websocket

    return await websocket.websocket_connect(httpclient.HTTPRequest(url, headers=headers))


async def _opens(url: str, headers: dict) -> None:
    (await _socket(url, headers)).close()


async def _run(url: str, headers: dict, command: str, timeout: float = 60) -> str:
    """Type `command` into the terminal at `url`; what it printed up to the DONE marker."""
    conn = await _socket(url, headers)
    try:
        await conn.write_message(json.dumps(["stdin", f"{command}; echo {DONE[:7]}''{DONE[7:]}\r"]))
        out = ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while DONE not in out:
            msg = await asyncio.wait_for(conn.read_message(), max(0.1, deadline - loop.time()))
            assert msg is not None, f"the terminal closed; it printed {out!r}"
            kind, *rest = json.loads(msg)
            if kind == "stdout":
                out += rest[0]
        return out
    finally:
        conn.close()


def ws_url(stack: WalnutStack, session_id: str, name: str) -> str:
    return f"ws://127.0.0.1:{stack.lab_port}/walnut/sessions/{session_id}/terminals/websocket/{name}"


def test_terminal_runs_in_the_session(lab) -> None:
    stack, node, (a, _b) = lab
    name = new_terminal(stack, a["id"])
    out = asyncio.run(_run(ws_url(stack, a["id"], name), {"Authorization": f"token {stack.token}"},
                           'python -V; echo "host=$(hostname) sid=$WALNUT_SESSION_ID pwd=$(pwd)"'
                           "; nvidia-smi || echo no gpu"))
    assert "Python 3.11" in out
    # the session's container, not this host: its hostname, its id, its workspace
    line = next(x for x in out.splitlines() if x.startswith("host="))
    fields = dict(f.split("=", 1) for f in line.split())
    assert fields["host"] != socket.gethostname()
    assert fields["sid"] == a["id"]
    assert fields["pwd"] == "/home/walnut/work"
    assert "no gpu" in out or "NVIDIA-SMI" in out
    listed = json.loads(renter(stack, f"{a['id']}/api/terminals")[1])
    assert name in [t["name"] for t in listed]


def test_terminal_needs_jupyter_auth(lab) -> None:
    stack, _node, (a, _b) = lab
    name = new_terminal(stack, a["id"])
    assert renter(stack, f"{a['id']}/api/terminals", token="")[0] == 403
    assert renter(stack, f"{a['id']}/api/terminals", "POST", token="wrong")[0] == 403
    from tornado import httpclient

    with pytest.raises(httpclient.HTTPClientError) as refused:
        asyncio.run(_socket(ws_url(stack, a["id"], name), {}))
    assert refused.value.code == 403
    # the renter's login cookie opens it from JupyterLab's own origin, not from another site's
    cookie = login_cookie(stack)
    own = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{stack.lab_port}"}
    asyncio.run(_opens(ws_url(stack, a["id"], name), own))
    with pytest.raises(httpclient.HTTPClientError) as foreign:
        asyncio.run(_socket(ws_url(stack, a["id"], name), {**own, "Origin": "http://evil.example"}))
    assert foreign.value.code == 403


def test_another_sessions_token_does_not_open_it(lab) -> None:
    stack, node, (a, b) = lab
    name = new_terminal(stack, a["id"])
    b_token = access_token(stack, b["id"])
    gateway = f"{node.url}/api/v1/sessions/{a['id']}/gateway"
    context = _insecure()
    status, body = http(f"{gateway}/api/terminals", "POST",
                        {"Authorization": f"token {b_token}"}, b"{}", context)
    assert status == 403, body
    status, _ = http(f"{gateway}/api/terminals", headers={
        "Authorization": f"token {access_token(stack, a['id'])}"}, context=context)
    assert status == 200  # the session's own token does

    async def b_socket():
        from tornado import httpclient, websocket

        req = httpclient.HTTPRequest(
            f"{gateway.replace('https', 'wss', 1)}/terminals/websocket/{name}",
            headers={"Authorization": f"token {b_token}"}, validate_cert=False)
        return await websocket.websocket_connect(req)

    from tornado import httpclient

    with pytest.raises(httpclient.HTTPClientError) as refused:
        asyncio.run(b_socket())
    assert refused.value.code == 403


def test_terminal_and_app_from_the_session_card_in_chromium(lab) -> None:
    """The card's Terminal opens JupyterLab's terminal widget on the session: what is typed
    runs there. An app started in it opens from the card's "Open port…" in a new tab, on the
    session's own origin, with no token in its URL."""
    from test_port_proxy import browser

    stack, _node, (a, _b) = lab
    sid, port = a["id"], free_port()
    with browser() as page:
        page.goto(stack.lab_url)
        page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=60_000)
        page.locator('.lm-TabBar-tab[data-id="jupyter-walnut-panel"]').first.click()
        card = page.locator(f'article.jp-Walnut-session[data-session="{sid}"]')
        card.get_by_role("button", name="Terminal").click()
        term = page.locator(f'.jp-Walnut-terminal[data-session="{sid}"]')
        term.locator(".xterm").wait_for(timeout=60_000)
        term.locator(".xterm").click()
        page.keyboard.type(f'echo "$(python -V) $WALNUT_SESSION_ID" > from-terminal.txt; '
                           f"python -m http.server {port} > /dev/null 2>&1 &")
        page.keyboard.press("Enter")
        # the shell ran in the session: its workspace has the file, with the session's id
        typed = wait_until(lambda: http_json(
            f"{stack.base_url}walnut/sessions/{sid}/api/contents/from-terminal.txt",
            token=stack.token), 60, "the file the terminal wrote")
        assert typed["content"].strip().startswith("Python 3.11") and sid in typed["content"]
        # the app the terminal started, from the card, in a tab of its own
        card.get_by_role("button", name="Open port…").click()
        dialog = page.locator(".jp-Dialog")
        dialog.locator("input").fill(str(port))
        with page.context.expect_page() as opened:
            dialog.locator("input").press("Enter")
        app = opened.value
        app.get_by_text("from-terminal.txt").wait_for(timeout=60_000)  # its directory listing
        url = urllib.parse.urlsplit(app.url)
        assert url.hostname == f"{sid}.localhost"
        assert url.path == f"/walnut/sessions/{sid}/proxy/{port}/"
        assert "token" not in app.url and stack.token not in app.url


def test_terminal_dies_with_its_session(lab) -> None:
    stack, _node, (_a, b) = lab
    name = new_terminal(stack, b["id"])
    headers = {"Authorization": f"token {stack.token}"}

    async def open_then_stop() -> object:
        conn = await _socket(ws_url(stack, b["id"], name), headers)
        await conn.write_message(json.dumps(["stdin", "sleep 600\r"]))
        await asyncio.to_thread(stack.api, f"sessions/{b['id']}", "DELETE")
        while True:  # the open terminal ends with the session
            msg = await asyncio.wait_for(conn.read_message(), 60)
            if msg is None:
                return conn.close_code

    assert asyncio.run(open_then_stop()) is not None
    status, body = renter(stack, f"{b['id']}/api/terminals", "POST")
    assert status == 409 and b"stopped" in body


def _insecure():
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


if os.environ.get("WALNUT_TEST_RUNTIME", "docker") != "docker":
    pytestmark.append(pytest.mark.skip(reason="the terminal tests run on the Docker stack"))
