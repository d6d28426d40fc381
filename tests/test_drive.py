"""A session's workspace as a Jupyter drive (issue #16): the renter's Jupyter Server relays
JupyterLab's Contents API to the session's gateway through the provider (default stack:
Docker + pinned TLS) and serves downloads as sandboxed attachments.

What a user of the file browser notices: listing, new folder, upload (whole and chunked, as
JupyterLab sends them), rename, delete and download work on the session's files; a chunk
re-sent (a retry after its answer was lost, or after a network cut the server rides out) is
never appended twice; a notebook the provider wrote with trusted cells comes back untrusted;
paths that climb out are refused; an ended session's drive answers 409 in words.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import pytest
from netcut import NetCut
from stack import StackNode, launch_kernel, renter_server_config
from tornado.httpclient import HTTPClientError

from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.extension.drive_models import BadModel, clean_model

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


class CountingCut(NetCut):
    """The test's network between the renter and the provider, counting connections, so
    the test waits for the renter to have tried through a cut instead of sleeping."""

    attempts = 0

    async def _handle(self, reader, writer) -> None:
        self.attempts += 1
        await super()._handle(reader, writer)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drive")
    ledger = LocalLedger(tmp / "ledger.sqlite")
    stack = StackNode(tmp / "provider", ledger)
    relay = CountingCut("127.0.0.1", stack.port)
    try:
        yield stack, relay, tmp / "ledger.sqlite"
    finally:
        relay.close()
        stack.stop()
        ledger.close()


@pytest.fixture
def jp_server_config(node, tmp_path):
    stack, relay, ledger_path = node
    return renter_server_config(tmp_path / "renter", ledger_path,
                                [relay.relayed(stack.pinned_url)])


async def open_session(jp_fetch, jp_ws_fetch, node):
    """A paid session with a kernel, through the relay: (session, kernel websocket)."""
    stack, relay, _ = node
    relay.restore()
    s, _, ws = await launch_kernel(jp_fetch, jp_ws_fetch, relay.relayed(stack.pinned_url),
                                   10**7)
    return s, ws


def contents(jp_fetch, sid: str, path: str = "", method: str = "GET", body=None, **params):
    parts = ["walnut", "sessions", sid, "api", "contents", *(p for p in path.split("/") if p)]
    kwargs = {"method": method, "params": params}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    elif method in ("POST", "PUT", "PATCH"):
        kwargs["body"] = "{}"
    return jp_fetch(*parts, **kwargs)


async def refused(call) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as info:
        await call
    return info.value.code, json.loads(info.value.response.body)["message"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def chunk(name: str, data: bytes, n: int | None) -> dict:
    model = {"type": "file", "format": "base64", "name": name, "content": b64(data)}
    return model if n is None else {**model, "chunk": n}


async def cat(ws, path: str) -> str:
    """The file as the session's kernel reads it by relative path: sha256 and size."""
    result = await ws.execute(f"import hashlib; d = open({path!r}, 'rb').read(); "
                              "print(hashlib.sha256(d).hexdigest(), len(d))")
    assert result.status == "ok", result.error
    return result.stdout.strip()


def digest(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()} {len(data)}"


async def test_browse_upload_rename_delete_download(jp_fetch, jp_ws_fetch, node):
    session = await open_session(jp_fetch, jp_ws_fetch, node)
    s, ws = session
    sid = s["id"]
    # a new folder, then a whole-file upload into it, as JupyterLab sends them
    folder = json.loads((await contents(jp_fetch, sid, "", "POST",
                                        {"type": "directory"})).body)
    assert folder["type"] == "directory"
    await contents(jp_fetch, sid, folder["path"], "PATCH", {"path": "data"})
    data = b"x,y\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(1000))
    saved = json.loads((await contents(jp_fetch, sid, "data/points.csv", "PUT",
                                       chunk("points.csv", data, None))).body)
    assert (saved["path"], saved["size"], saved["type"]) == ("data/points.csv", len(data), "file")
    assert await cat(ws, "data/points.csv") == digest(data)  # the kernel reads it in place
    listing = json.loads((await contents(jp_fetch, sid, "data")).body)
    assert [(e["name"], e["size"]) for e in listing["content"]] == [("points.csv", len(data))]
    # opened in place as text, renamed, then downloaded as an attachment
    text = json.loads((await contents(jp_fetch, sid, "data/points.csv",
                                      format="text", type="file")).body)
    assert text["content"] == data.decode()
    await contents(jp_fetch, sid, "data/points.csv", "PATCH", {"path": "data/renamed.csv"})
    resp = await jp_fetch("walnut", "sessions", sid, "files", "data", "renamed.csv")
    assert resp.body == data
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="renamed.csv"')
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Walnut-Sha256"] == hashlib.sha256(data).hexdigest()
    # deleted: gone from the listing and from the kernel's view
    await contents(jp_fetch, sid, "data/renamed.csv", "DELETE")
    assert json.loads((await contents(jp_fetch, sid, "data")).body)["content"] == []
    code, message = await refused(contents(jp_fetch, sid, "data/renamed.csv"))
    assert code == 404, message


async def test_chunks_resent_are_never_appended_twice(jp_fetch, jp_ws_fetch, node):
    session = await open_session(jp_fetch, jp_ws_fetch, node)
    s, ws = session
    sid, relay = s["id"], node[1]
    parts = [bytes([i]) * (1 << 20) for i in range(1, 4)] + [b"tail"]
    path = "big/model.bin"
    await contents(jp_fetch, sid, path, "PUT", chunk("model.bin", parts[0], 1))
    # chunk 2 twice: its first answer "lost", the browser (or anyone) sends it again
    await contents(jp_fetch, sid, path, "PUT", chunk("model.bin", parts[1], 2))
    await contents(jp_fetch, sid, path, "PUT", chunk("model.bin", parts[1], 2))
    # nothing is at the path until the last chunk: no half-written file to read
    code, _ = await refused(contents(jp_fetch, sid, path))
    assert code == 404
    # chunk 3 across a network cut: the renter's server retries it from its start offset
    relay.cut()
    before = relay.attempts
    pending = asyncio.ensure_future(contents(jp_fetch, sid, path, "PUT",
                                             chunk("model.bin", parts[2], 3)))
    deadline = asyncio.get_running_loop().time() + 30
    while relay.attempts < before + 2:  # refused twice: it is riding the cut out
        assert not pending.done(), pending.exception()
        assert asyncio.get_running_loop().time() < deadline, "the renter never retried"
        await asyncio.sleep(0.05)
    relay.restore()
    assert (await pending).code == 200
    done = json.loads((await contents(jp_fetch, sid, path, "PUT",
                                      chunk("model.bin", parts[3], -1))).body)
    whole = b"".join(parts)
    assert done["size"] == len(whole)
    assert await cat(ws, path) == digest(whole)
    # out of order is refused in words, not appended
    code, message = await refused(contents(jp_fetch, sid, "other.bin", "PUT",
                                           chunk("other.bin", b"x", 2)))
    assert code == 409 and "chunk 1" in message


async def test_provider_notebook_comes_back_untrusted(jp_fetch, jp_ws_fetch, node):
    session = await open_session(jp_fetch, jp_ws_fetch, node)
    s, ws = session
    sid = s["id"]
    # the provider owns the container: it plants a notebook whose cells claim trust, with
    # an HTML output that would run script if JupyterLab trusted it
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"signature": "sha256:forged"},
          "cells": [{"cell_type": "code", "id": "a", "execution_count": 1, "source": "1",
                     "metadata": {"trusted": True},
                     "outputs": [{"output_type": "display_data", "metadata": {},
                                  "data": {"text/html": "<script>window.x=1</script>"}}]}]}
    code = f"import json; json.dump({nb!r}, open('evil.ipynb', 'w'))"
    assert (await ws.execute(code)).status == "ok"
    model = json.loads((await contents(jp_fetch, sid, "evil.ipynb")).body)
    assert model["type"] == "notebook"
    assert [c["metadata"]["trusted"] for c in model["content"]["cells"]] == [False]
    assert "signature" not in model["content"]["metadata"] and "trusted" not in model
    # the download route serves the HTML as bytes to save, never as a page
    assert (await ws.execute("open('page.html', 'w').write('<script>1</script>')")
            ).status == "ok"
    resp = await jp_fetch("walnut", "sessions", sid, "files", "page.html")
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"].startswith("attachment")


async def test_paths_out_of_the_workspace_are_refused(jp_fetch, jp_ws_fetch, node):
    session = await open_session(jp_fetch, jp_ws_fetch, node)
    sid = session[0]["id"]
    for bad in ("../etc/passwd", "a/../../x", "a//b"):
        url = f"walnut/sessions/{sid}/api/contents/{quote(bad, safe='/')}"
        code, message = await refused(jp_fetch(url))
        assert code in (400, 404), (bad, code, message)
    code, message = await refused(contents(jp_fetch, sid, "x", "PATCH", {"path": "../x"}))
    assert (code, message.startswith("bad path")) == (400, True)
    code, message = await refused(contents(jp_fetch, sid, "x.bin", "PUT",
                                           {"type": "file", "format": "base64",
                                            "content": "not base64!"}))
    assert (code, message) == (400, "content is not base64")


async def test_an_ended_session_has_no_drive(jp_fetch, jp_ws_fetch, node):
    session = await open_session(jp_fetch, jp_ws_fetch, node)
    sid = session[0]["id"]
    await jp_fetch("walnut", "sessions", sid, method="DELETE", request_timeout=120)
    code, message = await refused(contents(jp_fetch, sid))
    assert code == 409 and "stopped" in message


@pytest.mark.parametrize("model, why", [
    ({"name": "../x", "path": "../x", "type": "file"}, "name is not a file name"),
    ({"name": "x", "path": "a/../x", "type": "file"}, "path is not a workspace path"),
    ({"name": "x", "path": "x", "type": "file", "size": "9"}, "size is not a size"),
    ({"name": "x", "path": "x", "type": "symlink"}, "type is not"),
    ({"name": "d", "path": "d", "type": "directory", "content": [
        {"name": "y", "path": "elsewhere/y", "type": "file"}]}, "listed outside its folder"),
])
def test_hostile_models_are_refused(model, why):
    with pytest.raises(BadModel, match=why):
        clean_model(model)


def test_clean_model_keeps_what_jupyterlab_reads():
    model = {"name": "n.ipynb", "path": "d/n.ipynb", "type": "notebook", "format": "json",
             "size": 10, "writable": True, "trusted": True, "created": "c", "extra": "x",
             "last_modified": "m", "mimetype": None,
             "content": {"cells": [{"cell_type": "markdown", "source": "", "metadata": {}}],
                         "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    clean = clean_model(model)
    assert "trusted" not in clean and "extra" not in clean
    assert clean["content"]["cells"][0]["metadata"] == {"trusted": False}
    assert Path(clean["path"]).name == clean["name"]
