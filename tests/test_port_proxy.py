"""A session's web app in the renter's browser, and what its hostile HTML cannot do (issue #16).

A stand-in app (tornado, which every session image has: a page, a relative fetch, a
websocket, a redirect) runs in a Docker session behind TLS with a pinned certificate; a real
JupyterLab with jupyter_walnut reaches it at `/walnut/sessions/<sid>/proxy/<port>/`, which hands
Chromium over to the session's own origin `<sid>.localhost` (see
jupyter_walnut/renter/extension/port_proxy.py for why). Without the session token the
provider answers 401, without Jupyter auth the renter server 403. A page of the app then
plays the attacker in Chromium: reads document.cookie, fetches /api/kernels and POSTs a
kernel start and a /walnut stop with whatever XSRF token it found, and nothing happens to the
renter's server. On the process runtime the provider's own API port is refused. The real
TensorBoard, behind the same proxy, is tests/test_tensorboard.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
import urllib.parse
from pathlib import Path

import pytest
from conftest import provider_config
from stack import StackNode
from test_container_breakout import Session
from test_session_terminal import access_token, http, login_cookie
from test_ui_e2e import CHROMIUM, CHROMIUM_ARGS, _missing, wait_for
from ui_helpers import WalnutStack, free_port, http_json

from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.provider_client import ProviderClient

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

APP_PORT = 8050
APP = r'''
import socket, sys, tornado.ioloop, tornado.web, tornado.websocket
PAGE = """<!doctype html><h1>walnut stand-in app</h1><p id=data>...</p><p id=ws>...</p>
<script>
fetch('api/data').then(r => r.json()).then(d => { data.textContent = 'host=' + d.hostname })
  .catch(e => { data.textContent = 'fetch failed ' + e })
const ws = new WebSocket(location.href.replace(/^http/, 'ws').replace(/[^/]*$/, '') + 'ws')
ws.onopen = () => ws.send('ping')
ws.onmessage = e => { document.getElementById('ws').textContent = e.data }
ws.onerror = () => { document.getElementById('ws').textContent = 'ws failed' }
</script>"""
ATTACK = """<!doctype html><pre id=result>running</pre><iframe name=sink></iframe>
<form id=f method=post target=sink><input name=_xsrf id=x></form>
<script>
(async () => {
  const q = new URLSearchParams(location.search), lab = q.get('lab'), sid = q.get('sid')
  const r = {}
  try { r.cookie = document.cookie } catch (e) { r.cookie = 'error ' + e.name }
  const xsrf = ((r.cookie || '').match(/_xsrf=([^;]+)/) || [])[1] || 'guessed'
  const tryit = async (name, url, init) => {
    try {
      const resp = await fetch(url, init)
      r[name] = resp.status + ' ' + (await resp.text()).slice(0, 80)
    }
    catch (e) { r[name] = 'blocked ' + e.name }
  }
  await tryit('relative', '/api/kernels', {})
  await tryit('kernels', lab + '/api/kernels', {credentials: 'include'})
  await tryit('start', lab + '/api/kernels', {method: 'POST', credentials: 'include',
    headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'}, body: '{}'})
  await tryit('start_nocors', lab + '/api/kernels?_xsrf=' + xsrf, {method: 'POST', mode: 'no-cors',
    credentials: 'include', body: '{}'})
  await tryit('stop', lab + '/walnut/sessions/' + sid, {method: 'DELETE', credentials: 'include',
    headers: {'X-XSRFToken': xsrf}})
  // a plain form POST (no CORS at all) with the token it found
  const f = document.getElementById('f'); document.getElementById('x').value = xsrf
  f.action = lab + '/api/kernels'; f.submit()
  await new Promise(ok => setTimeout(ok, 1500))  // the form's answer lands in the iframe
  r.done = true
  document.getElementById('result').textContent = JSON.stringify(r)
})()
</script>"""
class Page(tornado.web.RequestHandler):
    def get(self): self.write(PAGE)
class Attack(tornado.web.RequestHandler):
    def get(self): self.write(ATTACK)
class Data(tornado.web.RequestHandler):
    def get(self):
        h = self.request.headers
        self.write({"hostname": socket.gethostname(), "cookie": h.get("Cookie", ""),
                    "authorization": h.get("Authorization", "")})
class Go(tornado.web.RequestHandler):
    def get(self): self.redirect("/api/data")
class Echo(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin): return True
    def on_message(self, m): self.write_message("echo:" + m)
routes = [("/", Page), ("/attack", Attack), ("/api/data", Data), ("/go", Go), ("/ws", Echo)]
tornado.web.Application(routes).listen(int(sys.argv[1]))
tornado.ioloop.IOLoop.current().start()
'''
START_APP = f"""
import subprocess, sys, socket, time
open('app.py', 'w').write({APP!r})
subprocess.Popen([sys.executable, 'app.py', '{APP_PORT}'], start_new_session=True,
                 stdout=open('app.log', 'w'), stderr=subprocess.STDOUT)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        socket.create_connection(('127.0.0.1', {APP_PORT}), 1).close(); print('listening'); break
    except OSError:
        time.sleep(0.1)  # polling the app's port, bounded by the deadline
"""


def start_app(node: StackNode, session_id: str, token: str, code: str = START_APP,
              expect: str = "listening", timeout: float = 60) -> None:
    """The stand-in app (or `code`), run by a kernel of the session as a renter's cell
    would; its output must say `expect`."""
    from kernel_ws import KernelWS

    client = ProviderClient(node.pinned_url, node.identity)

    async def run():
        kernel = await client.gateway(session_id, token, "POST", "api/kernels",
                                      {"name": "python3"})
        ws = KernelWS(await client.kernel_websocket(session_id, token, kernel["id"]))
        try:
            return await ws.execute(code, timeout=timeout)
        finally:
            ws.conn.close()

    result = node.run(run())
    assert expect in result.stdout, result.stdout + result.stderr


@pytest.fixture(scope="module")
def lab():
    """(stack, node, session): a running Docker session with the stand-in app on APP_PORT."""
    root = Path(tempfile.mkdtemp(prefix="walnut-ports-"))
    ledger = LocalLedger(root / "ledger.sqlite")
    node = StackNode(root / "stack-provider", ledger)
    try:
        with WalnutStack(root, provider_url=node.pinned_url) as stack:
            stack.api("wallet/fund", "POST", {"amount_mist": 10**10})
            session = stack.api("sessions", "POST", {"provider_url": node.pinned_url,
                                                     "shape": "cpu-small"})
            start_app(node, session["id"], access_token(stack, session["id"]))
            yield stack, node, session
    finally:
        node.stop()
        ledger.close()
        shutil.rmtree(root, ignore_errors=True)


def _insecure():
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ticket(stack: WalnutStack, session_id: str) -> dict:
    """What JupyterLab's Open command gets: the app's URL, its login URL and a ticket."""
    return http_json(f"{stack.base_url}walnut/sessions/{session_id}/proxy/{APP_PORT}", "POST",
                     {}, stack.token)


def on_apps_origin(url: str, method: str = "GET", headers: dict | None = None,
                   body: bytes | None = None) -> tuple[int, bytes]:
    """A request to the session's origin (`<sid>.localhost:<port>`) through loopback."""
    parts = urllib.parse.urlsplit(url)
    return http(f"http://127.0.0.1:{parts.port}{parts.path}", method,
                {"Host": parts.netloc, **(headers or {})}, body)


def test_the_app_needs_credentials(lab) -> None:
    stack, node, s = lab
    token = access_token(stack, s["id"])
    provider = f"{node.url}/api/v1/sessions/{s['id']}/proxy/{APP_PORT}/api/data"
    assert http(provider, context=_insecure())[0] == 401  # no session token
    assert http(provider, headers={"Authorization": "token nope"}, context=_insecure())[0] == 403
    status, body = http(provider, headers={"Authorization": f"token {token}"},
                        context=_insecure())
    assert status == 200 and json.loads(body)["hostname"] != os.uname().nodename
    # the renter's server: Jupyter auth, then the session's own origin with its cookie
    page = f"{stack.base_url}walnut/sessions/{s['id']}/proxy/{APP_PORT}/"
    assert http(page)[0] == 403
    assert http(f"{stack.base_url}walnut/sessions/{s['id']}/proxy/{APP_PORT}", "POST",
                {"Cookie": login_cookie(stack)}, b"{}")[0] == 403  # no XSRF token
    opened = ticket(stack, s["id"])
    assert opened["url"].startswith(f"http://{s['id']}.localhost:")
    assert on_apps_origin(opened["url"] + "api/data")[0] == 403  # no cookie
    status, _ = on_apps_origin(opened["login"], "POST", body=b"ticket=forged")
    assert status == 403


def test_the_app_in_chromium(lab) -> None:
    stack, _node, s = lab
    with browser() as page:
        page.goto(stack.lab_url)
        page.goto(f"{stack.base_url}walnut/sessions/{s['id']}/proxy/{APP_PORT}/")
        page.get_by_text("walnut stand-in app").wait_for()
        assert page.url.startswith(f"http://{s['id']}.localhost:")
        assert urllib.parse.urlsplit(page.url).path == \
            f"/walnut/sessions/{s['id']}/proxy/{APP_PORT}/"
        page.locator("#data", has_text="host=").wait_for()
        page.locator("#ws", has_text="echo:ping").wait_for()
        # the app's absolute redirect stays under the prefix on the session's origin
        page.goto(page.url + "go")
        data = json.loads(page.locator("body").inner_text())
        assert urllib.parse.urlsplit(page.url).path.endswith(f"/proxy/{APP_PORT}/api/data")
        # the app never sees the renter's cookies nor the session token
        assert data["authorization"] == "" and "walnut-proxy" not in data["cookie"]
        assert "_xsrf" not in data["cookie"] and "username" not in data["cookie"]


def test_hostile_app_cannot_act_as_the_renter(lab) -> None:
    stack, _node, s = lab
    kernels_before = http_json(f"{stack.base_url}api/kernels", token=stack.token)
    lab_origin = f"http://127.0.0.1:{stack.lab_port}"
    with browser() as page:
        page.goto(stack.lab_url)
        xsrf = next(c["value"] for c in page.context.cookies() if c["name"] == "_xsrf")
        query = urllib.parse.urlencode({"lab": lab_origin, "sid": s["id"]})
        page.goto(f"{stack.base_url}walnut/sessions/{s['id']}/proxy/{APP_PORT}/attack?{query}")
        result = page.locator("#result", has_text='"done":true')
        result.wait_for(timeout=60_000)
        r = json.loads(result.inner_text())
    # it read no cookie of Jupyter's (nor the HttpOnly one of its own origin)
    assert xsrf not in r["cookie"] and "_xsrf" not in r["cookie"]
    assert "walnut-proxy" not in r["cookie"]
    assert r["relative"].startswith("404")  # its origin serves only the session's ports
    assert r["kernels"].startswith("blocked")  # CORS: no answer of Jupyter's to read
    assert r["start"].startswith("blocked") and r["stop"].startswith("blocked")
    # and on the renter's server nothing happened: no kernel started, the session runs
    assert http_json(f"{stack.base_url}api/kernels", token=stack.token) == kernels_before
    assert stack.api(f"sessions/{s['id']}")["status"] == "running"


def test_the_app_ends_with_the_session(lab) -> None:
    stack, node, s = lab
    opened = ticket(stack, s["id"])
    stack.api(f"sessions/{s['id']}", "DELETE")
    status, body = on_apps_origin(opened["login"], "POST", body=urllib.parse.urlencode(
        {"ticket": opened["ticket"]}).encode())
    assert status == 403, body
    page = f"{stack.base_url}walnut/sessions/{s['id']}/proxy/{APP_PORT}/"
    assert http(page, headers={"Authorization": f"token {stack.token}"})[0] == 409
    provider = f"{node.url}/api/v1/sessions/{s['id']}/proxy/{APP_PORT}/"
    assert http(provider, headers={"Authorization": f"token {access_token(stack, s['id'])}"},
                context=_insecure())[0] == 409


# --- the process runtime: the host's loopback is not the session's ----------------------------


def test_process_runtime_refuses_ports_not_of_the_session(tmp_path) -> None:
    ledger = LocalLedger(tmp_path / "ledger.sqlite")
    cfg = provider_config(provider={"name": "ports-process", "runtime": "process"},
                          shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 768,
                                   "price_per_second_mist": 1}],  # Session's channel price
                          settlement={"grace_s": 3600})
    node = StackNode(tmp_path / "provider", ledger, config=cfg, runtime="process")
    try:
        session = Session(node)
        base = f"{node.url}/api/v1/sessions/{session.id}/proxy"
        auth = {"Authorization": f"token {session.token}"}
        status, body = http(f"{base}/{node.port}/api/v1/health", headers=auth,
                            context=_insecure())
        assert status == 403 and b"not listened on by this session" in body
        # a port the session's own process listens on is proxied
        port = free_port()
        result = session.execute(START_APP.replace(str(APP_PORT), str(port)), timeout=60)
        assert "listening" in result.stdout, result.stdout + result.stderr
        status, body = http(f"{base}/{port}/api/data", headers=auth, context=_insecure())
        assert status == 200, body
        node.run(node.sessions.stop(session.id))  # and its app with it
        assert http(f"{base}/{port}/api/data", headers=auth, context=_insecure())[0] == 409
        with pytest.raises(OSError):  # the app left the session's process tree, yet it is gone
            socket.create_connection(("127.0.0.1", port), 1).close()
    finally:
        node.stop()
        ledger.close()


# --- why another origin: what Chromium sends from a sandboxed page --------------------------


def test_chromium_sends_no_cookie_from_a_sandboxed_page() -> None:
    """CSP `sandbox` without allow-same-origin (an opaque origin) would keep the app's script
    off Jupyter's cookies, but then none of its requests carries a cookie either, whatever
    its SameSite: so a cookie cannot be the app's credential on JupyterLab's origin."""
    from tornado import web, websocket

    seen: list[tuple[str, str]] = []
    sandbox = "sandbox allow-scripts allow-forms allow-popups allow-downloads"

    class SetCookies(web.RequestHandler):
        def get(self) -> None:
            for attrs in ("lax=1; SameSite=Lax", "strict=1; SameSite=Strict",
                          "none=1; SameSite=None; Secure", "unset=1"):
                self.add_header("Set-Cookie", attrs + "; Path=/")

    class Page(web.RequestHandler):
        def get(self) -> None:
            seen.append(("page", self.request.headers.get("Cookie", "")))
            self.set_header("Content-Security-Policy", sandbox)
            self.write("<img src='/probe/img'><script>(async () => {"
                       "const quiet = () => 0;"  # CORS refuses the answers: only sending counts
                       "await fetch('/probe/fetch').catch(quiet); await fetch('/probe/include', "
                       "{credentials: 'include'}).catch(quiet); const ws = new WebSocket("
                       "'ws://' + location.host + '/ws'); ws.onopen = () => {"
                       "document.title = 'done'} })()</script>")

    class Probe(web.RequestHandler):
        def get(self, what: str) -> None:
            seen.append((what, self.request.headers.get("Cookie", "")))

    class Socket(websocket.WebSocketHandler):
        def check_origin(self, origin: str) -> bool:
            return True

        async def get(self, *args, **kwargs) -> None:
            seen.append(("websocket", self.request.headers.get("Cookie", "")))
            await super().get(*args, **kwargs)

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application([("/set", SetCookies), ("/page", Page), (r"/probe/(\w+)", Probe),
                               ("/ws", Socket)])
        server = app.listen(0, "127.0.0.1")
        port.append(next(iter(server._sockets.values())).getsockname()[1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
    try:
        with browser() as page:
            page.goto(f"http://127.0.0.1:{port[0]}/set")
            assert len(page.context.cookies()) == 4
            page.goto(f"http://127.0.0.1:{port[0]}/page")
            wait_for(lambda: len(seen) >= 5, 30, f"the sandboxed page's requests ({seen})")
    finally:
        loop.call_soon_threadsafe(loop.stop)
    assert dict(seen)["page"]  # the navigation itself carried them
    assert {what: cookie for what, cookie in seen if what != "page"} == {
        "img": "", "fetch": "", "include": "", "websocket": ""}


class browser:
    """A Chromium page (Playwright), closed with everything it opened."""

    def __enter__(self):
        reason = _missing()
        if reason:
            pytest.skip(reason)
        from playwright.sync_api import sync_playwright

        self._p = sync_playwright().start()
        self._browser = self._p.chromium.launch(executable_path=str(CHROMIUM),
                                                args=CHROMIUM_ARGS)
        page = self._browser.new_context().new_page()
        page.set_default_timeout(30_000)
        return page

    def __exit__(self, *exc) -> None:
        self._browser.close()
        self._p.stop()
