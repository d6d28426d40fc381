"""The session gateway reads a pushed file once (issue #16): it hashes an upload as it
arrives, and the commit keeps that sha256 for the file it lands as, so the stat and the
download of a pull after a push (or a sync's next manifest) read nothing again. A file
changed after the commit is hashed afresh. The gateway's own file handlers in-process, on
a real tornado server."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import pytest_asyncio
from tornado import httpclient, httpserver, netutil, web
from walnut_gateway import files

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

TOKEN = "gateway-token"


@pytest_asyncio.fixture
async def gateway(tmp_path, monkeypatch):
    reads: list[int] = []
    original = files.sha256_fd

    def counted(fd: int) -> str:
        reads.append(fd)
        return original(fd)

    monkeypatch.setattr(files, "sha256_fd", counted)
    root = tmp_path / "workspace"
    root.mkdir()
    app = web.Application(files.handlers()[:7], kg_auth_token=TOKEN,
                          walnut_workspace=str(root), walnut_hashes=files.HashCache(),
                          walnut_uploads=files.Uploads(str(root)))
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    server = httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/walnut/fs"
    client = httpclient.AsyncHTTPClient(force_instance=True)

    async def call(method: str, route: str, body: bytes | None = None, **headers):
        resp = await client.fetch(f"{base}/{route}", method=method, body=body,
                                  headers={"Authorization": f"token {TOKEN}", **headers},
                                  raise_error=False, allow_nonstandard_methods=True)
        return resp

    yield call, root, reads
    client.close()
    server.stop()


async def test_a_pull_after_a_push_reads_the_file_only_to_send_it(gateway):
    call, root, reads = gateway
    data = os.urandom(3 << 20)
    digest = hashlib.sha256(data).hexdigest()
    assert (await call("PUT", "upload/run/model.ckpt?offset=0", data)).code == 200
    committed = await call("POST", "commit/run/model.ckpt",
                           json.dumps({"size": len(data), "sha256": digest}).encode())
    assert committed.code == 200, committed.body
    stat = json.loads((await call("GET", "stat/run/model.ckpt")).body)
    download = await call("GET", "download/run/model.ckpt")
    assert stat["sha256"] == digest and download.headers["X-Walnut-Sha256"] == digest
    assert download.body == data
    assert reads == []  # hashed as it arrived, never read again for a hash

    # changed after the commit: a new hash, read from the file
    (root / "run" / "model.ckpt").write_bytes(b"other bytes")
    stat = json.loads((await call("GET", "stat/run/model.ckpt")).body)
    assert stat["sha256"] == hashlib.sha256(b"other bytes").hexdigest() and len(reads) == 1


async def test_a_folder_sync_keeps_its_connection(tmp_path, gateway, monkeypatch):
    """A push of many small files and their pull come and go on kept-alive connections
    (renter/workspace/http_pool.py): not one TCP and TLS setup per request."""
    from jupyter_walnut.common.keys import KeyPair
    from jupyter_walnut.common.protocol import gateway_path
    from jupyter_walnut.renter.provider_client import ProviderClient
    from jupyter_walnut.renter.workspace import WorkspaceClient

    connections: list[object] = []
    prefix = gateway_path("s-0000000000000001")
    root = tmp_path / "prefixed"
    root.mkdir()
    app = web.Application([(prefix + route, handler) for route, handler in files.handlers()[:7]],
                          kg_auth_token=TOKEN, walnut_workspace=str(root),
                          walnut_hashes=files.HashCache(), walnut_uploads=files.Uploads(str(root)))

    class Counting(httpserver.HTTPServer):
        def handle_stream(self, stream, address):
            connections.append(address)
            return super().handle_stream(stream, address)

    sockets = netutil.bind_sockets(0, "127.0.0.1")
    server = Counting(app)
    server.add_sockets(sockets)
    try:
        url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        client = WorkspaceClient(ProviderClient(url, KeyPair.generate()), "s-0000000000000001",
                                 TOKEN)
        folder = tmp_path / "results"
        folder.mkdir()
        for i in range(30):
            (folder / f"epoch-{i:02d}.txt").write_text(f"loss {1 / (i + 1)}\n")
        sent = await client.push(folder, "results")
        back = await client.pull("results", tmp_path / "back")
        assert (sent.files, back.files) == (30, 30)
        assert (tmp_path / "back" / "epoch-07.txt").read_text() == "loss 0.125\n"
        assert 1 <= len(connections) <= 2, len(connections)  # ~95 requests
    finally:
        server.stop()
