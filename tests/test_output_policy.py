"""The output policy: what a provider's kernel may show in the renter's browser.

Every active-content trick below must come out inert; every benign output (plots, tables,
math, widgets) must come out as it went in."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest

from jupyter_walnut.renter.kernel.output_policy import OutputPolicy, clean_html, clean_svg, sanitize

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()

HTML_TRICKS = {
    "script": "<script>window.__walnut_pwned=1</script>",
    "script mixed case": "<ScRiPt>window.__walnut_pwned=1</sCrIpT>",
    "img onerror": '<img src=x onerror="window.__walnut_pwned=1">',
    "img onerror mixed case": '<IMG SRC=x OnErRoR="window.__walnut_pwned=1">',
    "svg onload": '<svg onload="window.__walnut_pwned=1"><circle r=1></svg>',
    "javascript link": '<a href="javascript:window.__walnut_pwned=1">x</a>',
    "javascript link, entities": '<a href="&#106;&#97;vascript&#58;window.__walnut_pwned=1">x</a>',
    "javascript link, tab inside": '<a href="jav&#x09;ascript:window.__walnut_pwned=1">x</a>',
    "javascript link, upper case": '<a href="JAVASCRIPT:window.__walnut_pwned=1">x</a>',
    "vbscript link": '<a href="vbscript:msgbox(1)">x</a>',
    "data:text/html link":
        '<a href="data:text/html,<script>window.__walnut_pwned=1</script>">x</a>',
    "data:text/html image": '<img src="data:text/html;base64,PHNjcmlwdD4=">',
    "iframe srcdoc": '<iframe srcdoc="<script>parent.__walnut_pwned=1</script>"></iframe>',
    "iframe javascript": '<iframe src="javascript:parent.__walnut_pwned=1"></iframe>',
    "meta refresh": '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "base href": '<base href="javascript:alert(1)//">',
    "form action": '<form action="javascript:alert(1)"><button>go</button></form>',
    "formaction": '<button formaction="javascript:alert(1)">go</button>',
    "object": '<object data="javascript:alert(1)"></object>',
    "embed": '<embed src="javascript:alert(1)">',
    "link stylesheet": '<link rel="stylesheet" href="javascript:alert(1)">',
    "style url(javascript:)": '<div style="background:url(javascript:alert(1))">x</div>',
    "style element": "<style>@import 'javascript:alert(1)'; body{background:red}</style>",
    "details ontoggle": '<details open ontoggle="window.__walnut_pwned=1">x</details>',
    "body onload": '<body onload="window.__walnut_pwned=1">',
    "math href": '<math href="javascript:alert(1)"><mi>x</mi></math>',
    "dom clobbering": '<img id="__walnut_pwned" name="__walnut_pwned" src="https://e/x.png">',
    "mathjax href": r"$\href{javascript:window.__walnut_pwned=1}{x}$",
    "template": "<template><img src=x onerror=alert(1)></template>",
    "noscript mutation": '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
}
SCRIPT_URL = re.compile(r"(java|vb)script\s*:", re.I)


def assert_inert(text: str) -> None:
    """No element or attribute that can run code, navigate or pull in a document."""
    lowered = text.lower()
    for tag in ("<script", "<iframe", "<object", "<embed", "<form", "<meta", "<base",
                "<link", "<style", "<svg", "<math", "<button", "<template", "<foreignobject"):
        assert tag not in lowered, (tag, text)
    assert not re.search(r"\son[a-z]+\s*=", lowered), text
    assert not SCRIPT_URL.search(text.replace("&#", "")), text
    assert "data:text/html" not in lowered, text
    assert not re.search(r'\sid="__walnut', text), text
    assert not re.search(r"\sname=", lowered), text
    assert r"\href{javascript" not in text


@pytest.mark.parametrize("trick", sorted(HTML_TRICKS))
def test_html_tricks_come_out_inert(trick):
    out = sanitize("display_data", {"data": {"text/html": HTML_TRICKS[trick],
                                             "text/plain": "p"}, "metadata": {}})
    assert_inert(out["data"]["text/html"])
    assert out["data"]["text/plain"] == "p"


@pytest.mark.parametrize("msg_type", ["display_data", "execute_result", "update_display_data"])
def test_every_display_message_is_cleaned(msg_type):
    content = {"data": {"text/html": HTML_TRICKS["img onerror"]}, "metadata": {},
               "transient": {"display_id": "d1"}, "execution_count": 3}
    out = sanitize(msg_type, content)
    assert_inert(out["data"]["text/html"])
    assert out["transient"] == {"display_id": "d1"}  # updates still find their display
    assert content["data"]["text/html"] == HTML_TRICKS["img onerror"]  # input not mutated


def test_active_and_unknown_mime_types_are_dropped_with_a_note():
    for mime in ("application/javascript", "text/javascript", "application/pdf",
                 "application/vnd.evil+json", "text/vnd.custom-renderer"):
        out = sanitize("display_data", {"data": {mime: "alert(1)"}, "metadata": {}})
        assert list(out["data"]) == ["text/plain"], mime
        assert mime in out["data"]["text/plain"] and "not shown" in out["data"]["text/plain"]
    # a safe representation next to it stays, without a note
    out = sanitize("execute_result", {"data": {"application/javascript": "alert(1)",
                                               "text/plain": "<Plot>"}, "metadata": {}})
    assert out["data"] == {"text/plain": "<Plot>"}


def test_markdown_becomes_clean_html():
    md = ("# Title\n\nSome *math* $x_1^2$ and a [safe link](https://example.org).\n\n"
          '<img src=x onerror="window.__walnut_pwned=1">\n\n'
          "[click](javascript:window.__walnut_pwned=1) [x](JaVaScRiPt:alert(1))\n\n"
          "<a href='javascript:alert(1)'>raw</a> `<code>` is text\n")
    out = sanitize("display_data", {"data": {"text/markdown": md, "text/plain": "md"},
                                    "metadata": {}})
    assert "text/markdown" not in out["data"]
    page = out["data"]["text/html"]
    assert_inert(page)
    assert "<h1>Title</h1>" in page and "<em>math</em>" in page
    assert r"\(x_1^2\)" in page  # left for JupyterLab's MathJax
    assert 'href="https://example.org"' in page
    assert "&lt;code&gt;" in page


def test_svg_keeps_a_matplotlib_plot_and_loses_active_content():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1, 4, 9], "o-")
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    plot = clean_svg(buf.getvalue())
    assert plot is not None and plot.startswith("<svg xmlns=\"http://www.w3.org/2000/svg\"")
    assert plot.count("<path") == buf.getvalue().count("<path")
    assert 'xlink:href="#' in plot  # the markers still refer to their definitions
    evil = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
            ' onload="window.__walnut_pwned=1"><script>window.__walnut_pwned=1</script>'
            '<foreignObject><iframe src="javascript:alert(1)"/></foreignObject>'
            '<a xlink:href="javascript:alert(1)"><text>x</text></a>'
            '<animate attributeName="href" to="javascript:alert(1)"/>'
            '<set attributeName="onmouseover" to="alert(1)"/>'
            '<image href="https://evil.example/track.png"/>'
            '<rect width="1" height="1" style="fill:url(https://evil.example/x)" '
            'onclick="alert(1)"/></svg>')
    out = sanitize("display_data", {"data": {"image/svg+xml": evil}, "metadata": {}})
    svg = out["data"]["image/svg+xml"]
    assert "<rect" in svg
    for bad in ("script", "foreignObject", "onload", "onclick", "javascript", "animate",
                "<set", "evil.example"):
        assert bad not in svg, bad
    # XML entity tricks and non-SVG are refused outright
    bomb = ('<!DOCTYPE svg [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            '<svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>')
    deep = f'<svg xmlns="{"http://www.w3.org/2000/svg"}">' + "<g>" * 5000 + "</g>" * 5000 + "</svg>"
    for source in (bomb, deep, "<html><script>1</script></html>", "not xml"):
        out = sanitize("display_data", {"data": {"image/svg+xml": source}, "metadata": {}})
        assert "image/svg+xml" not in out["data"]


def test_benign_outputs_pass_unchanged():
    import pandas as pd

    table = pd.DataFrame({"loss": [0.5, 0.25], "name": ["a", "b<c"]})._repr_html_()
    bundles = [
        {"image/png": PNG, "text/plain": "<Figure>"},
        {"image/jpeg": "/9j/", "image/gif": "R0lG", "image/webp": "UklG"},
        {"text/latex": r"$\frac{a}{b}$", "text/plain": "a/b"},
        {"application/json": {"a": [1, 2, {"b": None}]}},
        {"application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2},
         "text/plain": "IntSlider(value=3)"},
        {"text/html": '<b>bold</b> <i>it</i> <a href="https://example.org" '
                      'rel="noopener noreferrer nofollow">link</a>'},
    ]
    for data in bundles:
        content = {"data": data, "metadata": {"image/png": {"width": 10}}}
        assert sanitize("display_data", content) is content  # relayed as it came
    out = sanitize("execute_result", {"data": {"text/html": table, "text/plain": "t"},
                                      "metadata": {}, "execution_count": 1})
    page = out["data"]["text/html"]
    assert '<table border="1" class="dataframe">' in page
    assert "<th>loss</th>" in page and "<td>0.25</td>" in page and "b&lt;c" in page
    # other messages are not touched at all
    for msg_type, content in [("stream", {"name": "stdout", "text": "<script>x</script>"}),
                              ("error", {"ename": "E", "evalue": "<img onerror=1>",
                                         "traceback": []}),
                              ("status", {"execution_state": "idle"})]:
        assert sanitize(msg_type, content) is content


def test_pager_payload_inspect_reply_and_help_links():
    reply = {"status": "ok", "execution_count": 1, "user_expressions": {}, "payload": [
        {"source": "page", "start": 0,
         "data": {"text/html": HTML_TRICKS["img onerror"], "text/plain": "doc"}},
        {"source": "set_next_input", "text": "x = 1", "replace": False}]}
    out = sanitize("execute_reply", reply)
    assert_inert(out["payload"][0]["data"]["text/html"])
    assert out["payload"][0]["data"]["text/plain"] == "doc"
    assert out["payload"][1] == reply["payload"][1]
    inspect = {"status": "ok", "found": True, "metadata": {},
               "data": {"text/html": HTML_TRICKS["javascript link"],
                        "application/javascript": "alert(1)", "text/plain": "len(obj)"}}
    out = sanitize("inspect_reply", inspect)
    assert set(out["data"]) == {"text/html", "text/plain"}
    assert_inert(out["data"]["text/html"])
    info = {"status": "ok", "help_links": [{"text": "Docs", "url": "https://docs.python.org"},
                                           {"text": "Evil", "url": "javascript:alert(1)"}]}
    assert sanitize("kernel_info_reply", info)["help_links"] == [info["help_links"][0]]


def widget_open(comm_id: str, state: dict) -> dict:
    return {"comm_id": comm_id, "target_name": "jupyter.widget",
            "data": {"state": state, "buffer_paths": []}}


def test_widget_html_state_is_cleaned_and_plain_state_kept():
    policy = OutputPolicy()
    evil = HTML_TRICKS["img onerror"]
    out = policy.sanitize("comm_open", widget_open("h1", {
        "_model_name": "HTMLModel", "value": evil, "description": evil,
        "description_allow_html": True, "tooltip": evil}))
    state = out["data"]["state"]
    for key in ("value", "description", "tooltip"):
        assert_inert(state[key])
    assert state["description_allow_html"] is True
    # later updates of that model are judged as HTML, whatever they claim to be
    update = {"comm_id": "h1", "data": {"method": "update", "buffer_paths": [],
                                        "state": {"_model_name": "TextModel", "value": evil}}}
    assert_inert(policy.sanitize("comm_msg", update)["data"]["state"]["value"])
    # HTMLMath and Label values, and an Output widget's bundles
    for model in ("HTMLMathModel", "LabelModel"):
        out = policy.sanitize("comm_open", widget_open(model, {"_model_name": model,
                                                               "value": evil}))
        assert_inert(out["data"]["state"]["value"])
    out = policy.sanitize("comm_open", widget_open("o1", {
        "_model_name": "OutputModel", "outputs": [
            {"output_type": "display_data", "metadata": {},
             "data": {"text/html": evil, "application/javascript": "alert(1)"}}]}))
    data = out["data"]["state"]["outputs"][0]["data"]
    assert list(data) == ["text/html"] and "onerror" not in data["text/html"]
    # plain widgets are left alone, so sliders, text boxes and labels keep working
    plain = [widget_open("s1", {"_model_name": "IntSliderModel", "value": 3, "min": 0,
                                "description": "n", "tooltip": "pick"}),
             widget_open("t1", {"_model_name": "TextModel", "value": "a < b & <b>c</b>",
                                "placeholder": "x < y"}),
             widget_open("l1", {"_model_name": "LabelModel", "value": "p < 0.05"})]
    for content in plain:
        assert policy.sanitize("comm_open", content) is content
    msg = {"comm_id": "t1", "data": {"method": "update", "state": {"value": "<img onerror=1>"},
                                     "buffer_paths": []}}
    assert policy.sanitize("comm_msg", msg) is msg  # a text box's value is text, not HTML
    other = {"comm_id": "c9", "target_name": "my.target", "data": {"value": evil}}
    assert policy.sanitize("comm_open", other) is other  # not a widget: not rendered


def test_unknown_comms_and_malformed_content_are_handled():
    policy = OutputPolicy()
    # a comm this policy never saw opened: its `value` is treated as HTML
    msg = {"comm_id": "zz", "data": {"method": "update",
                                     "state": {"value": HTML_TRICKS["svg onload"]}}}
    assert_inert(policy.sanitize("comm_msg", msg)["data"]["state"]["value"])
    assert sanitize("display_data", {"data": "not a bundle"})["data"] == {}
    out = sanitize("display_data", {"data": {"text/html": 42}})
    assert list(out["data"]) == ["text/plain"] and "text/html" in out["data"]["text/plain"]
    out = sanitize("display_data", {"data": {"text/html": 42, "image/png": ["iVBO", "Rw=="]}})
    assert out["data"] == {"image/png": "iVBORw=="}  # nbformat's line lists are joined
    for content in ([], None, "x"):
        assert sanitize("display_data", content) is content


def test_clean_html_keeps_links_and_images_of_the_web():
    page = clean_html('<img src="https://example.org/a.png" alt="a">'
                      f'<img src="data:image/png;base64,{PNG}">'
                      '<img src="/logout"><a href="../../api/contents">rel</a>')
    assert 'src="https://example.org/a.png"' in page and f"base64,{PNG}" in page
    assert "/logout" not in page and "api/contents" not in page  # nothing aimed at the server


def test_walnut_run_republishes_through_the_policy(monkeypatch):
    """`%%walnut run` re-displays the remote kernel's outputs in the local kernel, whose
    outputs JupyterLab trusts: they pass the same policy."""
    from jupyter_walnut.renter import magics

    published: list[tuple[dict, dict]] = []
    monkeypatch.setattr(magics, "publish_display_data",
                        lambda data, metadata=None, **kw: published.append((data, kw)))
    for kind in ("display_data", "execute_result", "update_display_data"):
        magics._show_output({"header": {"msg_type": kind}, "content": {
            "data": {"text/html": HTML_TRICKS["img onerror"], "image/png": PNG,
                     "application/javascript": "alert(1)"},
            "metadata": {}, "transient": {"display_id": "d"}}})
    assert len(published) == 3
    for data, _ in published:
        assert set(data) == {"text/html", "image/png"} and data["image/png"] == PNG
        assert_inert(data["text/html"])
    assert published[2][1]["update"] is True


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames, copy=True) -> None:
        self.sent.append([bytes(f) for f in frames])


def _frames(msg_type: str, content: bytes) -> list[bytes]:
    header = json.dumps({"msg_id": "m", "msg_type": msg_type, "session": "s",
                         "username": "u", "date": "", "version": "5.3"}).encode()
    return [header, b"{}", b"{}", content]


@pytest.mark.parametrize("trust", [False, True])
def test_the_bridge_relays_bytes_and_re_encodes_only_what_it_cleans(trust):
    from jupyter_walnut.common.jupyter_wire import sign
    from jupyter_walnut.renter.kernel.bridge import KernelBridge

    async def never(*args):
        raise AssertionError("not used")

    bridge = KernelBridge(never, never, never, trust_outputs=trust)
    iopub = bridge.sockets["iopub"] = _Recorder()
    # odd spacing shows whether the bytes were re-encoded
    stream = _frames("stream", b'{"name":  "stdout", "text": "<script>x</script>"}')
    plot = _frames("display_data",
                   b'{"data":  {"image/png": "' + PNG.encode() + b'"}, "metadata": {}}')
    evil = _frames("display_data",
                   b'{"data": {"text/html": "<img src=x onerror=alert(1)>"}, "metadata": {}}')
    broken = [b"\xff\xfe not json", b"{}", b"{}", b"{}"]
    for parts in (stream, plot, evil, broken):
        bridge._deliver("iopub", parts)
    bridge.ctx.term()
    if trust:  # the opt-in: everything as the provider sent it, except what no client reads
        assert [f[2:] for f in iopub.sent] == [stream, plot, evil]
        return
    assert [f[2:] for f in iopub.sent[:2]] == [stream, plot]  # byte for byte
    cleaned = iopub.sent[2]
    assert cleaned[2:5] == evil[:3]
    assert json.loads(cleaned[5])["data"]["text/html"] == "<img>"
    assert cleaned[1] == sign(bridge.key, cleaned[2:])  # re-signed over the new content
    assert len(iopub.sent) == 3  # an unreadable header is never relayed


def test_trust_is_per_provider_and_honours_the_pin(monkeypatch):
    from types import SimpleNamespace

    from jupyter_walnut.renter.kernel.provisioner import WalnutProvisioner

    pin = "#sha256=" + "ab" * 32
    renter = SimpleNamespace(trusted_output_providers={"https://mine:8765"})
    monkeypatch.setattr(WalnutProvisioner, "renter", property(lambda self: renter))
    provisioner = WalnutProvisioner(kernel_id="k", kernel_spec=None)

    def trusts(url: str) -> bool:
        return provisioner._trusts_outputs(SimpleNamespace(provider_url=url))

    assert trusts("https://mine:8765") and trusts("https://mine:8765/" + pin)
    assert not trusts("https://other:8765" + pin) and not trusts("https://mine:8766")
    renter.trusted_output_providers = {"https://mine:8765" + pin}
    assert trusts("https://mine:8765" + pin)
    assert not trusts("https://mine:8765#sha256=" + "cd" * 32)  # another certificate
    renter.trusted_output_providers = set()
    assert not trusts("https://mine:8765" + pin)  # off by default
