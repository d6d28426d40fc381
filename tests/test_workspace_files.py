"""The session workspace's file API (issue #16) end to end through the provider's proxy, on
the default stack (Docker runtime, TLS with pinning; tests/stack.py) and one process-runtime
case: the Jupyter Contents API; a 40 MiB upload in one PUT (past the API's 16 MiB body cap),
committed, then downloaded with a Range resume; an upload resumed after a PUT cut mid-body;
a commit with a wrong hash; and the attacks: another session's token, '..', absolute,
%2e%2e, NUL, and symlinks the renter's kernel plants to /etc, /tmp and the gateway's own
files, for reading and writing through both APIs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from conftest import open_channel, provider_config
from kernel_ws import KernelWS
from stack import StackNode, stack_runtime
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LocalLedger

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(600)]

MiB = 1 << 20


def make_node(tmp, name: str, runtime: str, tls: bool | None = None) -> StackNode:
    config = provider_config(provider={"name": name, "runtime": runtime},
                             availability={"max_sessions": 4})
    node = StackNode(tmp / "provider", LocalLedger(tmp / "ledger.sqlite"), config=config,
                     runtime=runtime, tls=tls)
    node.ca_certs = str(tmp / "provider" / "provider" / "cert.pem") if node.tls else None
    return node


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    stack = make_node(tmp_path_factory.mktemp("files"), "files-node", stack_runtime())
    try:
        yield stack
    finally:
        stack.stop()


@dataclass
class Session:
    """A running session, its kernel, and raw HTTP through the provider's proxy."""

    node: StackNode
    sid: str
    token: str
    kernel_id: str

    def url(self, route: str, sid: str | None = None) -> str:
        return f"{self.node.url}/api/v1/sessions/{sid or self.sid}/gateway/{route}"

    async def call(self, method: str, route: str, body: bytes | dict | None = None,
                   headers: dict | None = None, token: str | None = None,
                   sid: str | None = None, **kwargs):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        if method in ("POST", "PUT", "PATCH") and body is None and "body_producer" not in kwargs:
            body = b""
        request = HTTPRequest(
            self.url(route, sid), method=method, body=body, allow_nonstandard_methods=True,
            headers={"Authorization": f"token {token or self.token}", **(headers or {})},
            request_timeout=300, ca_certs=self.node.ca_certs, **kwargs)
        return await AsyncHTTPClient().fetch(request, raise_error=False)

    async def json(self, method: str, route: str, body=None, expect: int = 200, **kwargs):
        resp = await self.call(method, route, body, **kwargs)
        assert resp.code == expect, (resp.code, resp.body[:300])
        return json.loads(resp.body) if resp.body else None

    async def run(self, code: str) -> str:
        """Run code in the session's kernel (the renter's code: the attacker's hands)."""
        client = self.node.client(self.key)
        ws = KernelWS(await client.kernel_websocket(self.sid, self.token, self.kernel_id))
        try:
            result = await ws.execute(code)
        finally:
            ws.conn.close()
        assert result.error is None, result.error
        return result.stdout

    async def upload(self, path: str, data: bytes) -> dict:
        q = quote(path)
        assert (await self.json("PUT", f"walnut/fs/upload/{q}?offset=0", data)) == \
            {"received": len(data)}
        return await self.json("POST", f"walnut/fs/commit/{q}",
                               {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


async def start_session(node: StackNode) -> Session:
    key = KeyPair.generate()
    client = node.client(key)
    created = await client.create_session(image="python",
                                          channel_id=open_channel(node.ledger, key, node))
    await client.wait_running(created["id"])
    kernel = await client.gateway(created["id"], created["access_token"], "POST",
                                  "api/kernels", {"name": "python3"})
    session = Session(node, created["id"], created["access_token"], kernel["id"])
    session.key = key
    return session


@pytest.fixture(scope="module")
def alice(node) -> Session:
    return node.run(start_session(node))


@pytest.fixture(scope="module")
def bob(node) -> Session:
    return node.run(start_session(node))


def listing(model: dict) -> set[str]:
    return {entry["name"] for entry in model["content"]}


async def test_contents_api_through_the_proxy(alice):
    # the kernel runs in the workspace: what it writes, the Contents API lists
    await alice.run("open('from_kernel.txt', 'w').write('hello from the kernel')")
    root = await alice.json("GET", "api/contents")
    assert "from_kernel.txt" in listing(root)
    got = await alice.json("GET", "api/contents/from_kernel.txt?content=1")
    assert got["content"] == "hello from the kernel"

    await alice.json("PUT", "api/contents/notes", {"type": "directory"}, expect=201)
    name = "notes/a b%c.txt"  # quoted on the way: the proxy must not unquote it
    saved = await alice.json("PUT", f"api/contents/{quote(name)}",
                             {"type": "file", "format": "text", "content": "v1"}, expect=201)
    assert saved["path"] == name
    assert listing(await alice.json("GET", "api/contents/notes")) == {"a b%c.txt"}
    # chunked save (LargeFileManager), then a checkpoint and a restore
    for chunk, text in ((1, "part one, "), (-1, "part two")):
        await alice.json("PUT", "api/contents/notes/big.txt",
                         {"type": "file", "format": "text", "content": text, "chunk": chunk},
                         expect=(201 if chunk == 1 else 200))
    checkpoint = await alice.json("POST", "api/contents/notes/big.txt/checkpoints",
                                  expect=201)
    await alice.json("PUT", "api/contents/notes/big.txt",
                     {"type": "file", "format": "text", "content": "overwritten"})
    await alice.json("POST", f"api/contents/notes/big.txt/checkpoints/{checkpoint['id']}",
                     expect=204)
    assert await alice.run("print(open('notes/big.txt').read())") == "part one, part two\n"

    renamed = await alice.json("PATCH", f"api/contents/{quote(name)}",
                               {"path": "notes/renamed.txt"})
    assert renamed["path"] == "notes/renamed.txt"
    assert "renamed.txt" in listing(await alice.json("GET", "api/contents/notes"))
    await alice.json("DELETE", "api/contents/notes/renamed.txt", expect=204)
    assert await alice.run("import os; print(os.path.exists('notes/renamed.txt'))") == \
        "False\n"
    # deliberately off: tornado's static route would follow symlinks unchecked
    assert (await alice.call("GET", "files/from_kernel.txt")).code == 404


async def test_large_upload_in_one_put_then_download_resumed_with_a_range(node, alice):
    data = os.urandom(40 * MiB)  # past the provider's 16 MiB body cap
    digest = hashlib.sha256(data).hexdigest()
    before = node.node.metrics.proxy_bytes.labels("to_gateway")._value.get()
    stat = await alice.upload("data/big.bin", data)
    assert stat == {"path": "data/big.bin", "type": "file", "size": len(data),
                    "mtime": stat["mtime"], "sha256": digest}
    assert node.node.metrics.proxy_bytes.labels("to_gateway")._value.get() - before >= \
        len(data)
    # the kernel sees the very bytes
    assert await alice.run("import hashlib; print(hashlib.sha256(open('data/big.bin', "
                           "'rb').read()).hexdigest())") == digest + "\n"
    assert (await alice.json("GET", "walnut/fs/upload/data/big.bin")) == {"received": 0}

    # a download cut after about 5 MiB, then resumed from what arrived
    first = bytearray()

    def take(chunk: bytes) -> None:
        first.extend(chunk)
        if len(first) >= 5 * MiB:
            raise ConnectionAbortedError("the renter's network went away")

    with pytest.raises((OSError, HTTPClientError)):
        await alice.call("GET", "walnut/fs/download/data/big.bin", streaming_callback=take)
    assert 5 * MiB <= len(first) < len(data)
    rest = await alice.call("GET", "walnut/fs/download/data/big.bin",
                            headers={"Range": f"bytes={len(first)}-"})
    assert rest.code == 206
    assert rest.headers["Content-Range"] == f"bytes {len(first)}-{len(data) - 1}/{len(data)}"
    assert rest.headers["X-Walnut-Sha256"] == digest
    assert hashlib.sha256(bytes(first) + rest.body).hexdigest() == digest
    whole = await alice.call("GET", "walnut/fs/download/data/big.bin")
    assert whole.code == 200 and whole.body == data
    past = await alice.call("GET", "walnut/fs/download/data/big.bin",
                            headers={"Range": f"bytes={len(data)}-"})
    assert past.code == 416 and past.headers["Content-Range"] == f"bytes */{len(data)}"

    manifest = await alice.json("GET", "walnut/fs/manifest/data")
    assert manifest == {"files": [{"path": "data/big.bin", "size": len(data),
                                   "mtime": stat["mtime"], "sha256": digest}],
                        "truncated": False}
    later = await alice.json("GET", f"walnut/fs/manifest/data?since={stat['mtime']}")
    assert later["files"] == []


async def test_upload_resumes_after_a_put_cut_mid_body(alice):
    data = os.urandom(12 * MiB)
    path = "resumed/part.bin"
    sent = 0

    async def producer(write):
        nonlocal sent
        for _ in range(4):  # 4 MiB of the 12 the Content-Length promised, then a cut
            await write(data[sent:sent + MiB])
            sent += MiB
        raise ConnectionAbortedError("the renter's network went away")

    with pytest.raises((OSError, HTTPClientError)):
        await alice.call("PUT", f"walnut/fs/upload/{path}?offset=0", body_producer=producer,
                         headers={"Content-Length": str(len(data))})
    # what arrived is kept (the gateway sees the cut once the proxy does: poll for it)
    deadline = time.monotonic() + 30
    while True:
        received = (await alice.json("GET", f"walnut/fs/upload/{path}"))["received"]
        busy = await alice.call("PUT", f"walnut/fs/upload/{path}?offset={received}",
                                b"", headers={"Content-Length": "0"})
        if busy.code == 200 and received > 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert 0 < received <= sent
    # nothing half-written is visible anywhere
    assert "resumed" not in listing(await alice.json("GET", "api/contents"))
    paths = [f["path"] for f in (await alice.json("GET", "walnut/fs/manifest/"))["files"]]
    assert paths and not [p for p in paths if p.startswith(("resumed", ".walnut"))]
    assert (await alice.call("GET", "walnut/fs/manifest/.walnut-uploads")).code == 400
    assert (await alice.call("GET", "api/contents/.walnut-uploads")).code == 404
    assert (await alice.call("GET", f"walnut/fs/stat/{path}")).code == 404
    # an offset past what arrived is refused with what did
    ahead = await alice.call("PUT", f"walnut/fs/upload/{path}?offset={received + 1}", b"x")
    assert ahead.code == 409 and json.loads(ahead.body)["received"] == received
    done = await alice.json("PUT", f"walnut/fs/upload/{path}?offset={received}",
                            data[received:])
    assert done == {"received": len(data)}
    stat = await alice.json("POST", f"walnut/fs/commit/{path}",
                            {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert stat["size"] == len(data)
    assert (await alice.call("GET", f"walnut/fs/download/{path}")).body == data


async def test_a_new_put_takes_over_one_stalled_by_a_silent_network(alice):
    data = os.urandom(6 * MiB)
    path = "stalled/part.bin"
    stalled = asyncio.Event()
    release = asyncio.Event()

    async def producer(write):
        await write(data[:2 * MiB])
        stalled.set()
        await release.wait()  # the network went silent: the connection stays open
        raise ConnectionAbortedError("gave up")

    first = asyncio.ensure_future(alice.call(
        "PUT", f"walnut/fs/upload/{path}?offset=0", body_producer=producer,
        headers={"Content-Length": str(len(data))}))
    await stalled.wait()
    deadline = time.monotonic() + 30
    received = 0
    while received < 2 * MiB and time.monotonic() < deadline:
        received = (await alice.json("GET", f"walnut/fs/upload/{path}"))["received"]
        await asyncio.sleep(0.05)
    assert received == 2 * MiB
    # the committing side refuses while a write is going on ...
    busy = await alice.call("POST", f"walnut/fs/commit/{path}",
                            {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert busy.code == 409
    # ... but the renter's retry takes over the upload
    assert await alice.json("PUT", f"walnut/fs/upload/{path}?offset={received}",
                            data[received:]) == {"received": len(data)}
    stat = await alice.json("POST", f"walnut/fs/commit/{path}",
                            {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert stat["size"] == len(data)
    release.set()
    with pytest.raises((OSError, HTTPClientError)):
        await first
    assert (await alice.call("GET", f"walnut/fs/download/{path}")).body == data


async def test_commit_with_a_wrong_hash_leaves_nothing_at_the_path(alice):
    data = b"the real bytes" * 1000
    await alice.json("PUT", "walnut/fs/upload/wrong.bin?offset=0", data)
    bad = await alice.call("POST", "walnut/fs/commit/wrong.bin",
                           {"size": len(data), "sha256": hashlib.sha256(b"other").hexdigest()})
    assert bad.code == 409 and "does not match" in json.loads(bad.body)["message"]
    assert (await alice.call("GET", "walnut/fs/stat/wrong.bin")).code == 404
    assert await alice.run("import os; print(os.path.exists('wrong.bin'))") == "False\n"
    assert (await alice.json("GET", "walnut/fs/upload/wrong.bin")) == {"received": 0}
    short = await alice.call("POST", "walnut/fs/commit/wrong.bin",
                             {"size": 1, "sha256": "0" * 64})
    assert short.code == 404  # the partial was discarded
    for body in ({"size": -1, "sha256": "0" * 64}, {"size": 1, "sha256": "xyz"}, b"not json"):
        assert (await alice.call("POST", "walnut/fs/commit/wrong.bin", body)).code == 400


async def test_commit_checks_the_bytes_on_disk_not_only_what_arrived(alice):
    """The gateway hashes an upload as it arrives; a commit still refuses a partial whose
    bytes changed after its last PUT, and a resume that rewinds is hashed right."""
    data = os.urandom(3 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    await alice.json("PUT", "walnut/fs/upload/changed.bin?offset=0", data)
    name = hashlib.sha256(b"changed.bin").hexdigest()
    # the session's code flips a byte of the partial in place (same size)
    assert await alice.run(f"import os\nfd = os.open('.walnut-uploads/{name}', os.O_RDWR)\n"
                           "print(os.pwrite(fd, b'\\0', 1000))\nos.close(fd)") == "1\n"
    changed = await alice.call("POST", "walnut/fs/commit/changed.bin",
                               {"size": len(data), "sha256": digest})
    assert changed.code == 409 and "does not match" in json.loads(changed.body)["message"]
    assert (await alice.call("GET", "walnut/fs/stat/changed.bin")).code == 404
    # a resume from before the end of what arrived: the bytes after it are sent again
    assert await alice.json("PUT", "walnut/fs/upload/rewound.bin?offset=0",
                            data[:2 * MiB] + os.urandom(MiB)) == {"received": 3 * MiB}
    assert await alice.json("PUT", f"walnut/fs/upload/rewound.bin?offset={MiB}",
                            data[MiB:]) == {"received": 3 * MiB}
    stat = await alice.json("POST", "walnut/fs/commit/rewound.bin",
                            {"size": len(data), "sha256": digest})
    assert stat["sha256"] == digest
    assert (await alice.call("GET", "walnut/fs/download/rewound.bin")).body == data


async def test_another_sessions_token_reaches_none_of_its_files(alice, bob):
    original = b"bob's results" * 100
    await bob.upload("results.bin", original)
    await bob.json("PUT", "api/contents/notes.txt",
                   {"type": "file", "format": "text", "content": "bob's notes"}, expect=201)
    attacks = [
        ("GET", "walnut/fs/download/results.bin", None),
        ("GET", "walnut/fs/stat/results.bin", None),
        ("GET", "walnut/fs/manifest/", None),
        ("PUT", "walnut/fs/upload/results.bin?offset=0", b"alice was here"),
        ("POST", "walnut/fs/commit/results.bin", {"size": 14, "sha256": "0" * 64}),
        ("DELETE", "walnut/fs/file/results.bin", None),
        ("GET", "api/contents/notes.txt", None),
        ("PUT", "api/contents/notes.txt", {"type": "file", "format": "text", "content": "x"}),
        ("DELETE", "api/contents/notes.txt", None),
    ]
    for method, route, body in attacks:
        resp = await alice.call(method, route, body, sid=bob.sid)  # alice's own token
        assert resp.code in (401, 403, 404), (method, route, resp.code)
        assert b"bob" not in (resp.body or b"")
        no_token = await alice.call(method, route, body, sid=bob.sid, token="nope")
        assert no_token.code in (401, 403), (method, route, no_token.code)
    assert (await bob.call("GET", "walnut/fs/download/results.bin")).body == original
    got = await bob.json("GET", "api/contents/notes.txt?content=1")
    assert got["content"] == "bob's notes"


TRAVERSALS = ["../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "..%2F..%2Fetc%2Fpasswd",
              "%2Fetc%2Fpasswd", "/etc/passwd", "a%00b", "ok/./x", "a//b"]


async def test_paths_that_leave_the_workspace_are_refused(alice):
    for path in TRAVERSALS:
        for method, route, body in (("GET", "walnut/fs/download/", None),
                                    ("GET", "walnut/fs/stat/", None),
                                    ("PUT", "walnut/fs/upload/", b"x"),
                                    ("POST", "walnut/fs/commit/", {"size": 1,
                                                                    "sha256": "0" * 64}),
                                    ("POST", "walnut/fs/mkdir/", None),
                                    ("DELETE", "walnut/fs/file/", None)):
            resp = await alice.call(method, route + path, body)
            assert resp.code == 400, (method, route + path, resp.code, resp.body)
            assert json.loads(resp.body)["message"]
    for path in ("..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "a%00b"):
        for method, body in (("GET", None), ("PUT", {"type": "file", "format": "text",
                                                     "content": "x"})):
            resp = await alice.call(method, "api/contents/" + path, body)
            assert resp.code in (400, 404), (method, path, resp.code, resp.body)
            assert b"root:" not in resp.body
    assert await alice.run("import os; print(os.path.exists('/etc/x'), "
                           "os.path.exists('etc/x'))") == "False False\n"


async def test_symlinks_the_kernel_plants_are_refused(alice):
    outside = f"/tmp/outside-{alice.sid}"  # outside the workspace, writable by the kernel
    out = await alice.run(
        "import os, importlib.util\n"
        f"os.makedirs({outside!r}, exist_ok=True)\n"
        "own = os.path.dirname(importlib.util.find_spec('walnut_gateway').origin)\n"
        "for name, to in (('etc_link', '/etc'), ('passwd_link', '/etc/passwd'),\n"
        f"                 ('tmp_link', {outside!r}), ('own_link', own),\n"
        "                 ('own_file', os.path.join(own, 'files.py'))):\n"
        "    os.path.lexists(name) or os.symlink(to, name)\n"
        "os.path.lexists('inside_link') or os.symlink('from_kernel.txt', 'inside_link')\n"
        "print(own)")
    assert out.strip()
    reads = ["etc_link/passwd", "passwd_link", "own_link/files.py", "own_file", "tmp_link"]
    for path in reads:
        for route in ("walnut/fs/download/", "walnut/fs/stat/", "walnut/fs/manifest/"):
            resp = await alice.call("GET", route + path)
            assert resp.code == 400, (route + path, resp.code)
            assert b"root:" not in resp.body and b"walnut/fs" not in resp.body
        resp = await alice.call("GET", f"api/contents/{path}?content=1")
        assert resp.code == 400, (path, resp.code)
        assert b"root:" not in resp.body and b"stream_request_body" not in resp.body
    writes = ["tmp_link/planted", "passwd_link", "own_file", "own_link/planted.py",
              "etc_link/planted"]
    for path in writes:
        resp = await alice.call("PUT", f"walnut/fs/upload/{path}?offset=0", b"evil")
        assert resp.code == 400, (path, resp.code)
        resp = await alice.call("POST", f"walnut/fs/commit/{path}",
                                {"size": 4, "sha256": hashlib.sha256(b"evil").hexdigest()})
        assert resp.code == 400, (path, resp.code)
        for method, route in (("PUT", f"api/contents/{path}"), ("DELETE", f"api/contents/{path}"),
                              ("POST", f"walnut/fs/mkdir/{path}/d"),
                              ("DELETE", f"walnut/fs/file/{path}")):
            body = {"type": "file", "format": "text", "content": "evil"} \
                if method == "PUT" else None
            resp = await alice.call(method, route, body)
            assert resp.code == 400, (method, route, resp.code)
    # a refusal with a large body still reaches the renter in words, through the proxy
    resp = await alice.call("PUT", "walnut/fs/upload/tmp_link/big?offset=0", os.urandom(8 * MiB))
    assert resp.code == 400 and "outside the workspace" in json.loads(resp.body)["message"]
    renamed = await alice.call("PATCH", "api/contents/from_kernel.txt",
                               {"path": "tmp_link/stolen.txt"})
    assert renamed.code == 400
    # a checkpoint folder planted as a symlink does not take the copy outside either
    await alice.run("os.path.lexists('.ipynb_checkpoints') or "
                    f"os.symlink({outside!r}, '.ipynb_checkpoints')")
    assert (await alice.call("POST", "api/contents/from_kernel.txt/checkpoints")).code == 400
    # a symlink inside the workspace is fine; the outside ones are not listed
    assert (await alice.call("GET", "walnut/fs/download/inside_link")).body == \
        b"hello from the kernel"
    names = listing(await alice.json("GET", "api/contents"))
    assert not names & {"etc_link", "passwd_link", "tmp_link", "own_link", "own_file"}
    paths = [f["path"] for f in (await alice.json("GET", "walnut/fs/manifest/"))["files"]]
    assert not [p for p in paths if "link" in p or p.startswith("own")]
    # the upload area replaced by a symlink: the gateway refuses to write through it
    await alice.run("import shutil; shutil.rmtree('.walnut-uploads', ignore_errors=True); "
                    f"os.symlink({outside!r}, '.walnut-uploads')")
    resp = await alice.call("PUT", "walnut/fs/upload/x.bin?offset=0", b"evil")
    assert resp.code == 409 and ".walnut-uploads" in json.loads(resp.body)["message"]
    assert await alice.run(f"print(sorted(os.listdir({outside!r})))") == "[]\n"
    await alice.run(f"os.unlink('.walnut-uploads'); os.rmdir({outside!r})")
    assert (await alice.upload("x.bin", b"fine again"))["size"] == 10


async def test_kernel_working_dir_must_be_in_the_workspace(alice):
    await alice.json("POST", "walnut/fs/mkdir/work/sub", expect=201)
    kernel = await alice.json("POST", "api/kernels",
                              {"name": "python3", "env": {"KERNEL_WORKING_DIR": "work/sub"}},
                              expect=201)
    probe = Session(alice.node, alice.sid, alice.token, kernel["id"])
    probe.key = alice.key
    assert (await probe.run("import os; print(os.getcwd())")).strip().endswith("/work/sub")
    await alice.json("DELETE", f"api/kernels/{kernel['id']}", expect=204)
    for bad in ("../", "/etc", "missing"):
        resp = await alice.call("POST", "api/kernels",
                                {"name": "python3", "env": {"KERNEL_WORKING_DIR": bad}})
        assert resp.code == 400, (bad, resp.code, resp.body)
        assert "KERNEL_WORKING_DIR" in json.loads(resp.body)["message"] or \
            "refused" in json.loads(resp.body)["message"]


async def test_process_runtime_workspace(tmp_path):
    node = make_node(tmp_path, "files-process", "process", tls=False)
    try:
        session = node.run(start_session(node))
        data = os.urandom(3 * MiB)
        stat = await session.upload("sub/p.bin", data)
        assert stat["sha256"] == hashlib.sha256(data).hexdigest()
        # the file is in the session's workspace, where its kernel runs
        where = (await session.run("import os; print(os.path.abspath('sub/p.bin'))")).strip()
        assert where.startswith(str(tmp_path)) and os.path.getsize(where) == len(data)
        await session.run("os.symlink('/etc', 'etc_link')")
        assert (await session.call("GET", "walnut/fs/download/etc_link/passwd")).code == 400
        assert (await session.call("GET", "api/contents/etc_link/passwd")).code == 400
        got = await session.call("GET", "walnut/fs/download/sub/p.bin",
                                 headers={"Range": "bytes=1000-"})
        assert got.code == 206 and got.body == data[1000:]
        # the gateway itself (reachable on the host in this runtime) wants its own token
        gateway = node.sessions._handles[session.sid].gateway_url
        for route in ("walnut/fs/download/sub/p.bin", "walnut/fs/manifest/",
                      "api/contents/sub"):
            for headers in ({}, {"Authorization": f"token {session.token}"}):
                resp = await AsyncHTTPClient().fetch(f"{gateway}/{route}", headers=headers,
                                                     raise_error=False)
                assert resp.code == 401, (route, headers, resp.code)
    finally:
        node.stop()
