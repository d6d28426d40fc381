"""Files between the renter and a session's workspace (issue #16): `WorkspaceClient` push and
pull, folder sync with ignore rules and content hashes, the size cap, a 1 GB upload across
a 10 s network cut, a hostile gateway's names and hashes, a launch that sends a folder so a
notebook's relative paths work, and `%walnut push/pull` and the REST transfers through the
renter's real Jupyter Server.

The default stack runs the sessions: a provider node with the Docker runtime over pinned
TLS (tests/stack.py). The hostile gateway is a small tornado app over pinned TLS answering
what the attack needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import provider_config
from kernel_ws import KernelWS
from netcut import NetCut
from stack import StackNode, renter_server_config, tls_context
from test_container_breakout import Session
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.provider_client import ProviderClient
from jupyter_walnut.renter.workspace import PathRefused, TransferError, WorkspaceClient

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

PRICE = 1


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workspace")
    cfg = provider_config(
        provider={"name": "ws-node", "runtime": "docker"},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 768,
                 "price_per_second_mist": PRICE, "disk_mb": 4096}],
        settlement={"grace_s": 3600})  # no vouchers from these renters: keep sessions up
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        stack = StackNode(tmp / "provider", ledger, config=cfg)
        try:
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def session(node) -> Session:
    return Session(node)


def workspace(node_or_url, session: Session, **kwargs) -> WorkspaceClient:
    url = node_or_url if isinstance(node_or_url, str) else node_or_url.pinned_url
    return WorkspaceClient(ProviderClient(url, KeyPair.generate()), session.id,
                           session.token, **kwargs)


def go(coro):
    return asyncio.run(coro)


def project(root: Path) -> Path:
    """A small project: data, code, and what its ignore files leave out."""
    (root / "data").mkdir(parents=True)
    (root / "build").mkdir()
    (root / "src" / "cache").mkdir(parents=True)
    (root / "data" / "data.csv").write_text("a,b\n1,2\n3,4\n")
    (root / "data" / "weights.bin").write_bytes(os.urandom(3 * 2**20 + 17))
    (root / "train.py").write_text("print('training')\n")
    (root / "run.log").write_text("noise\n")
    (root / "build" / "out.o").write_text("object\n")
    (root / "secret.env").write_text("TOKEN=do-not-send\n")
    (root / "src" / "model.py").write_text("W = 1\n")
    (root / "src" / "cache" / "c.tmp").write_text("tmp\n")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / ".walnutignore").write_text("secret.env\n")
    (root / "src" / ".gitignore").write_text("cache/\n")  # rules of a subfolder
    outside = root.parent / "outside.txt"
    outside.write_text("not part of the project\n")
    os.symlink(outside, root / "link.txt")  # never followed
    return root


SENT = [".gitignore", ".walnutignore", "data/data.csv", "data/weights.bin", "src/.gitignore",
        "src/model.py", "train.py"]


def remote_files(session: Session, folder: str) -> dict[str, str]:
    """What the session's own kernel sees under `folder`: {relative path: sha256}."""
    probe = session.probe(
        "import hashlib, json, os\n"
        f"top = {folder!r}\n"
        "out = {}\n"
        "for d, _, names in os.walk(top):\n"
        "    for n in names:\n"
        "        p = os.path.join(d, n)\n"
        "        out[os.path.relpath(p, top)] = hashlib.sha256(open(p, 'rb').read())"
        ".hexdigest()\n"
        "print(json.dumps(out))")
    return probe


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- push and pull ------------------------------------------------------------------------


def test_a_folder_goes_minus_its_ignored_files_and_comes_back(node, session, tmp_path):
    src = project(tmp_path / "proj")
    client = workspace(node, session)
    seen = []
    result = go(client.push(src, "proj", progress=seen.append))
    assert result.files == len(SENT) and result.skipped == 0
    remote = remote_files(session, "proj")
    assert sorted(remote) == SENT  # no *.log, build/, secret.env, src/cache/, symlink
    assert all(remote[rel] == sha(src / rel) for rel in SENT)
    assert seen[-1].done == seen[-1].total == result.bytes
    assert seen[-1].files == len(SENT)

    back = tmp_path / "back"
    pulled = go(client.pull("proj", back))
    assert pulled.files == len(SENT)
    got = sorted(str(p.relative_to(back)) for p in back.rglob("*") if p.is_file())
    assert got == SENT
    assert all(sha(back / rel) == sha(src / rel) for rel in SENT)
    one = go(client.pull("proj/data/data.csv", tmp_path))
    assert one.files == 1 and (tmp_path / "data.csv").read_text() == "a,b\n1,2\n3,4\n"


def test_an_unchanged_file_is_never_sent_twice(node, session, tmp_path):
    src = project(tmp_path / "proj")
    client = workspace(node, session)
    go(client.push(src, "twice"))
    again = go(client.push(src, "twice"))
    assert (again.files, again.bytes, again.skipped) == (0, 0, len(SENT))
    assert again.wire_bytes == 0
    assert f"skipped {len(SENT)} unchanged" in again.summary()

    (src / "src" / "model.py").write_text("W = 2\n")
    changed = go(client.push(src, "twice"))
    assert (changed.files, changed.skipped) == (1, len(SENT) - 1)
    assert changed.wire_bytes == len("W = 2\n")  # that file's bytes, nothing else
    assert remote_files(session, "twice")["src/model.py"] == sha(src / "src" / "model.py")


def test_the_size_cap_refuses_before_anything_is_sent(node, session, tmp_path):
    src = project(tmp_path / "proj")
    client = workspace(node, session, max_bytes=2**20)  # the folder holds over 3 MiB
    with pytest.raises(TransferError) as refused:
        go(client.push(src, "capped"))
    assert refused.value.status == 413
    assert "over the 1.0 MB limit; nothing was sent" in refused.value.message
    probe = session.probe("import json, os; print(json.dumps(os.path.exists('capped')))")
    assert probe is False
    received = go(client.gateway.rest("GET", "walnut/fs/upload/capped/data/data.csv"))
    assert received == {"received": 0}  # not even a partial upload


def test_a_1gb_upload_survives_a_10s_network_cut(node, session, tmp_path):
    size = 2**30
    big = tmp_path / "big.bin"
    block = os.urandom(64 * 2**20)
    with open(big, "wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
    relay = NetCut("127.0.0.1", node.port)
    direct = workspace(node, session)  # the test's own view, not through the relay
    cut_client = workspace(relay.relayed(node.pinned_url), session)
    route = "walnut/fs/upload/big.bin"
    marks: dict[str, int] = {}

    async def scenario():
        push = asyncio.ensure_future(cut_client.push(big, "big.bin"))
        deadline = time.monotonic() + 300
        while (await direct.gateway.rest("GET", route))["received"] < 300 * 2**20:
            assert not push.done(), push.result()
            assert time.monotonic() < deadline, "the upload did not reach 300 MB"
            await asyncio.sleep(0.05)  # polling the gateway's partial, bounded above
        relay.cut()
        marks["at_cut"] = (await direct.gateway.rest("GET", route))["received"]
        cut_at = time.monotonic()
        while time.monotonic() - cut_at < 10:  # the network stays down for 10 s
            marks["arrived"] = (await direct.gateway.rest("GET", route))["received"]
            assert not push.done(), "the push ended during the cut"
            await asyncio.sleep(0.2)
        relay.restore()
        return await push

    try:
        result = go(scenario())
    finally:
        relay.close()
    assert result.files == 1 and result.bytes == size
    # it went on from what had arrived, not from 0 and not from what it had sent
    assert result.resumed_at[0] == marks["arrived"] >= marks["at_cut"] > 0
    # what was on the way at the cut is all that went twice: far from the 300 MB a restart
    # from 0 would have sent again
    assert result.wire_bytes < size + 64 * 2**20
    stat = go(direct.stat("big.bin"))
    assert stat["size"] == size and stat["sha256"] == sha(big)


# --- a hostile gateway ---------------------------------------------------------------------


class HostileGateway:
    """A fake provider whose session gateway answers stat, manifest and download with what
    the test sets in `files` ({path: bytes}) and `manifest` (the entries it claims)."""

    def __init__(self, directory: Path) -> None:
        ssl_context, self.fingerprint = tls_context(directory, "hostile-gw")
        self.manifest: list[dict] = []
        self.body: dict[str, bytes] = {}
        self.hash_header: dict[str, str] = {}
        hostile = self

        class Handler(web.RequestHandler):
            def get(self, route: str, path: str) -> None:
                if route == "stat":
                    self.finish({"path": path, "type": "directory", "size": 0, "mtime": 0})
                elif route == "manifest":
                    self.finish({"files": hostile.manifest, "truncated": False})
                elif route == "download":
                    self.set_header("X-Walnut-Sha256", hostile.hash_header[path])
                    self.finish(hostile.body[path])
                else:
                    raise web.HTTPError(404)

        prefix = r"/api/v1/sessions/s-[0-9a-f]{16}/gateway/walnut/fs"
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start() -> int:
            sockets = bind_sockets(0, "127.0.0.1")
            HTTPServer(web.Application([(prefix + r"/(\w+)/?(.*)", Handler)]),
                       ssl_options=ssl_context).add_sockets(sockets)
            return sockets[0].getsockname()[1]

        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.url = f"https://127.0.0.1:{port}#sha256={self.fingerprint}"

    def offer(self, path: str, data: bytes, *, stated: bytes | None = None,
              header: bytes | None = None) -> None:
        """Serve `data` at `path`, claiming the hash of `stated` in the manifest and of
        `header` in the download's header (both default to the true one)."""
        true = hashlib.sha256(data).hexdigest()
        claimed = hashlib.sha256(stated).hexdigest() if stated is not None else true
        self.manifest.append({"path": path, "size": len(data), "mtime": 0,
                              "sha256": claimed})
        self.body[path] = data
        self.hash_header[path] = hashlib.sha256(header).hexdigest() if header is not None \
            else claimed

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def hostile(tmp_path):
    gw = HostileGateway(tmp_path)
    yield gw
    gw.stop()


def hostile_client(gw: HostileGateway) -> WorkspaceClient:
    return WorkspaceClient(ProviderClient(gw.url, KeyPair.generate()), "s-" + "0" * 16,
                           "token", retry_s=1)


def everything_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("name", ["out/../../evil.txt", "/tmp/evil.txt", "out/./evil.txt",
                                  "out//evil.txt", "out/evil\n.txt", "elsewhere/evil.txt"])
def test_a_manifest_naming_outside_dest_is_refused(hostile, tmp_path, name):
    hostile.offer("out/fine.txt", b"fine")
    hostile.offer(name, b"evil")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PathRefused):
        go(hostile_client(hostile).pull("out", dest))
    assert everything_under(tmp_path) == ["dest", "hostile-gw", "hostile-gw/cert.pem",
                                          "hostile-gw/key.pem"]  # nothing written at all


@pytest.mark.parametrize("lie", ["manifest", "header", "bytes", "longer"])
def test_a_download_with_a_wrong_hash_is_refused_and_not_written(hostile, tmp_path, lie):
    data = b"the real bytes\n" * 1000
    if lie == "manifest":  # the manifest's hash is another file's, the header agrees
        hostile.offer("out/a.txt", data, stated=b"other", header=b"other")
    elif lie == "header":
        hostile.offer("out/a.txt", data, header=b"other")
    elif lie == "bytes":  # both hashes are of the real bytes, but others are sent
        hostile.offer("out/a.txt", data)
        hostile.body["out/a.txt"] = b"X" * len(data)
    else:  # more bytes than the size stated
        hostile.offer("out/a.txt", data)
        hostile.body["out/a.txt"] = data + b"more"
    dest = tmp_path / "dest"
    with pytest.raises(TransferError) as refused:
        go(hostile_client(hostile).pull("out", dest))
    assert "out/a.txt" in refused.value.message
    assert everything_under(dest) == []  # no file, no temporary file


def test_a_symlink_in_dest_is_never_followed(hostile, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "sub")  # planted by anyone: the pull must not go through it
    hostile.offer("out/sub/x.txt", b"through the link")
    with pytest.raises(PathRefused):
        go(hostile_client(hostile).pull("out", dest))
    assert everything_under(outside) == []


# --- through the renter's Jupyter Server ----------------------------------------------------


@pytest.fixture
def jp_server_config(node, tmp_path, monkeypatch):
    import jupyter_walnut.renter.manager as manager

    home = tmp_path / "renter"
    home.mkdir()
    # a local kernel of this server runs %walnut magics with the same renter home
    monkeypatch.setenv("WALNUT_HOME", str(home))
    monkeypatch.setenv("WALNUT_LEDGER", str(node.ledger.path))
    monkeypatch.setattr(manager, "_current", None)
    return renter_server_config(home, node.ledger.path, [node.pinned_url])


async def poll_transfer(jp_fetch, sid: str, tid: str) -> dict:
    deadline = time.monotonic() + 120
    while True:
        record = json.loads((await jp_fetch("walnut", "sessions", sid, "transfers",
                                            tid)).body)
        if record["state"] != "running":
            return record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.1)  # polling the server's transfer, bounded above


async def test_launch_with_a_folder_then_relative_paths_work(jp_fetch, jp_ws_fetch,
                                                             jp_root_dir, node):
    proj = project(Path(jp_root_dir) / "proj")
    (proj / "analysis").mkdir()
    (proj / "analysis" / "nb.ipynb").write_text("{}")
    (proj / "analysis" / "local.csv").write_text("x\n42\n")
    # what the launch form shows before anything is paid: what would be sent, and the cap
    plan = json.loads((await jp_fetch("walnut", "folder", params={"folder": "proj"})).body)
    assert plan["folder"] == "proj" and plan["fits"] and plan["files"] > 0, plan
    assert plan["ignored"] >= 1 and plan["max_bytes"] > plan["bytes"] > 0, plan
    for bad in ({"folder": "../outside"}, {"folder": "proj/analysis/local.csv"}, {},
                {"folder": "proj", "folder_from_notebook": "proj/analysis/nb.ipynb"}):
        with pytest.raises(Exception) as refused:
            await jp_fetch("walnut", "folder", params=bad)
        assert refused.value.code == 400, bad
    launch = {"provider_url": node.pinned_url, "shape": "cpu-small", "budget_mist": 600_000}
    with pytest.raises(Exception) as refused:  # one folder or the other, before any step
        await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
            {**launch, "folder": "proj", "folder_from_notebook": "proj/analysis/nb.ipynb"}))
    assert refused.value.code == 400
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {**launch, "folder": "proj"}), request_timeout=240)
    session = json.loads(resp.body)
    steps = {s["step"]: s for s in session["launch"]}
    assert steps["workspace"]["state"] == "done", steps
    assert "skipped" not in steps["workspace"]["detail"]
    assert list(steps).index("workspace") == list(steps).index("kernelspec") - 1
    # a notebook in proj/analysis runs there, as it does locally
    opened = json.loads((await jp_fetch("api", "sessions", method="POST", body=json.dumps(
        {"path": "proj/analysis/nb.ipynb", "type": "notebook",
         "kernel": {"name": session["kernel_name"]}}))).body)
    ws = KernelWS(await jp_ws_fetch("api", "kernels", opened["kernel"]["id"], "channels"))
    result = await ws.execute("import os\nprint(open('local.csv').read().split()[1], "
                              "open('../data/data.csv').read().splitlines()[1], "
                              "sorted(os.listdir('..')))", timeout=120)
    assert result.status == "ok", result.error
    line = result.stdout.split()
    assert line[:2] == ["42", "1,2"]
    assert "secret.env" not in result.stdout and "run.log" not in result.stdout

    # the REST transfers for the UI: push a file, pull a folder, progress by polling
    (Path(jp_root_dir) / "extra.txt").write_text("more\n")
    started = json.loads((await jp_fetch(
        "walnut", "sessions", session["id"], "push", method="POST",
        body=json.dumps({"path": "extra.txt", "dest": "analysis/"}))).body)
    done = await poll_transfer(jp_fetch, session["id"], started["id"])
    assert done["state"] == "done" and done["result"]["files"] == 1, done
    started = json.loads((await jp_fetch(
        "walnut", "sessions", session["id"], "pull", method="POST",
        body=json.dumps({"path": "analysis", "dest": "back"}))).body)
    done = await poll_transfer(jp_fetch, session["id"], started["id"])
    assert done["state"] == "done", done
    back = Path(jp_root_dir) / "back"
    assert (back / "extra.txt").read_text() == "more\n"
    assert (back / "local.csv").read_text() == "x\n42\n"
    with pytest.raises(Exception) as refused:
        await jp_fetch("walnut", "sessions", session["id"], "pull", method="POST",
                       body=json.dumps({"path": "analysis", "dest": "../../escape"}))
    assert refused.value.code == 400
    await jp_fetch("walnut", "sessions", session["id"], method="DELETE")


async def test_push_and_pull_magics_in_a_kernel_of_the_renters_server(
        jp_fetch, jp_ws_fetch, jp_root_dir, node):
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": node.pinned_url, "shape": "cpu-small", "budget_mist": 600_000}),
        request_timeout=240)
    session = json.loads(resp.body)
    project(Path(jp_root_dir) / "proj")
    local = json.loads((await jp_fetch("api", "sessions", method="POST", body=json.dumps(
        {"path": "mine.ipynb", "type": "notebook", "kernel": {"name": "python3"}}))).body)
    ws = KernelWS(await jp_ws_fetch("api", "kernels", local["kernel"]["id"], "channels"))
    assert (await ws.execute("%load_ext jupyter_walnut", timeout=60)).status == "ok"
    pushed = await ws.execute("%walnut push proj mine", timeout=180)
    assert pushed.status == "ok", (pushed.error, pushed.stderr)
    assert f"walnut: pushed {len(SENT)} files" in pushed.stdout
    shown = json.dumps([m["content"] for m in pushed.messages])
    assert "<progress" in shown  # the bar, as an updating display
    again = await ws.execute("%walnut push proj mine", timeout=180)
    assert "pushed 0 files (0 B)" in again.stdout
    assert f"skipped {len(SENT)} unchanged" in again.stdout
    pulled = await ws.execute("%walnut pull mine/data copy", timeout=180)
    assert "walnut: pulled 2 files" in pulled.stdout, (pulled.error, pulled.stderr)
    copy = Path(jp_root_dir) / "copy"
    assert (copy / "data.csv").read_text() == "a,b\n1,2\n3,4\n"
    missing = await ws.execute("%walnut pull mine/nope", timeout=60)
    assert missing.status == "error"
    assert missing.stderr.strip() == \
        "UsageError: walnut: workspace:mine/nope: no such file or folder"  # one line
    await jp_fetch("walnut", "sessions", session["id"], method="DELETE")

