"""Nothing lost at the end (issue #16), on the default stack (Docker + pinned TLS): before a
session ends, for any reason, its provider saves the files created or changed in its
workspace and keeps them for the renter; the renter's Jupyter Server brings them home into
`walnut-results/<session>/`, and warns before the end.

- a session whose budget runs out: the files a cell wrote arrive with their hashes, the
  session's env does not, and the warning was in the session's JSON before the end;
- "save results now" pulls a running session's changed files; a renter's stop and the
  maximum duration save too;
- the cap: a file past it is listed as left out, never half in the archive;
- the grace period: downloadable again, gone once the expiry pass finds it past its time;
- a hung gateway does not keep the provider from stopping the session;
- attacks: a hostile provider's archive (traversal, absolute name, link, device, more bytes
  than its manifest, a file it does not list) is refused whole, nothing outside the folder;
  another renter's key cannot see, fetch or drop the results.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import pytest
from conftest import open_channel, provider_config
from kernel_ws import KernelWS
from stack import StackNode, launch_kernel, renter_server_config
from test_hostile_providers import Hostile

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.models import Settlement
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.manager import RenterManager
from jupyter_walnut.renter.provider_client import ProviderAPIError, ProviderClient
from jupyter_walnut.renter.results import _path, _signed_json
from jupyter_walnut.renter.store import RenterSession

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

PRICE = 1000  # MIST per second
MAX_MB = 2  # the node keeps 2 MiB of a session's results
SAVE_TIMEOUT_S = 8

WRITE = r"""
import hashlib, json, os
os.makedirs("out/plots", exist_ok=True)
files = {"out/model.ckpt": os.urandom(300_000), "out/plots/loss.png": b"\x89PNG" + os.urandom(5000),
         "notes.txt": b"hello\n"}
for name, data in files.items():
    with open(name, "wb") as fh:
        fh.write(data)
os.makedirs(".walnut/env/lib", exist_ok=True)
open(".walnut/env/lib/installed.py", "w").write("x = 1\n")  # the session env: never saved
print(json.dumps({n: hashlib.sha256(d).hexdigest() for n, d in files.items()}))
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("results")
    ledger = LocalLedger(tmp / "ledger.sqlite")
    config = provider_config(
        provider={"name": "results-node", "runtime": "docker"},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": PRICE, "disk_mb": 256}],
        settlement={"min_prepaid_s": 5, "grace_s": 3600},  # direct sessions pay nothing
        results={"keep_hours": 1, "max_mb": MAX_MB, "save_timeout_s": SAVE_TIMEOUT_S})
    stack = StackNode(tmp / "provider", ledger, config=config)
    try:
        yield stack, tmp / "ledger.sqlite"
    finally:
        stack.stop()
        ledger.close()


@pytest.fixture
def jp_server_config(node, tmp_path):
    stack, ledger_path = node
    return renter_server_config(tmp_path / "renter", ledger_path, [stack.pinned_url],
                                RenterManager={"warn_minutes_before_end": 5})


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_of(p) for p in root.rglob("*")
            if p.is_file()}


async def session_json(jp_fetch, sid: str) -> dict:
    return json.loads((await jp_fetch("walnut", "sessions", sid)).body)


async def wait_results(jp_fetch, sid: str, timeout: float = 120) -> dict:
    """Poll the session's JSON until its results are home (or were refused)."""
    deadline = time.monotonic() + timeout
    while True:
        s = await session_json(jp_fetch, sid)
        state = (s.get("results") or {}).get("state")
        if state in ("saved", "none", "failed", "refused", "expired"):
            return s
        assert time.monotonic() < deadline, s.get("results")
        await asyncio.sleep(0.2)  # polling the renter's server, bounded by the deadline


async def write_files(ws) -> dict[str, str]:
    result = await ws.execute(WRITE)
    assert result.status == "ok", result.error
    return json.loads(result.stdout.strip().splitlines()[-1])


async def test_a_budget_end_brings_the_changed_files_home_after_a_warning(
        jp_fetch, jp_ws_fetch, jp_serverapp, node):
    stack, _ = node
    s, _, ws = await launch_kernel(jp_fetch, jp_ws_fetch, stack.pinned_url, 40 * PRICE)
    written = await write_files(ws)
    seen: list[dict] = []
    deadline = time.monotonic() + 120
    while True:  # the session's JSON, as the sidebar polls it, until the budget ends it
        current = await session_json(jp_fetch, s["id"])
        seen.extend(w for w in current["warnings"] if w not in seen)
        if current["status"] != "running":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)  # polling the renter's server, bounded by the deadline
    assert "deposit is used up" in current["reason"]
    kinds = {w["kind"] for w in seen}
    assert kinds == {"budget", "ending"}, seen
    ending = next(w for w in seen if w["kind"] == "ending")
    assert ending["actions"] == ["top_up", "save_results"] and ending["seconds_left"] <= 10
    assert "ends in about" in ending["message"]

    final = await wait_results(jp_fetch, s["id"])
    results = final["results"]
    folder = Path(jp_serverapp.root_dir) / "walnut-results" / s["id"]
    assert results["state"] == "saved" and Path(results["path"]) == folder
    assert files_under(folder) == written  # the env and nothing else is not there
    assert results["files"] == 3 and results["bytes"] == sum(
        (folder / n).stat().st_size for n in written)
    assert results["kept_until"] > time.time()


async def test_save_now_and_a_renter_stop_save_the_results(jp_fetch, jp_ws_fetch,
                                                           jp_serverapp, node):
    stack, _ = node
    s, _, ws = await launch_kernel(jp_fetch, jp_ws_fetch, stack.pinned_url, 10**7)
    written = await write_files(ws)
    # "Save results now" while it runs: the changed files, here at once
    resp = await jp_fetch("walnut", "sessions", s["id"], "results", method="POST", body="{}",
                          request_timeout=120)
    now = json.loads(resp.body)["results"]
    folder = Path(jp_serverapp.root_dir) / "walnut-results" / s["id"]
    assert now["state"] == "saved_now" and Path(now["path"]) == folder
    assert files_under(folder) == written
    later = await ws.execute("open('later.txt', 'w').write('after the save')")
    assert later.status == "ok"
    await jp_fetch("walnut", "sessions", s["id"], method="DELETE", request_timeout=200)
    final = await wait_results(jp_fetch, s["id"])
    assert final["results"]["state"] == "saved"
    assert files_under(folder) == {
        **written, "later.txt": hashlib.sha256(b"after the save").hexdigest()}


async def test_the_maximum_duration_saves_the_results(jp_fetch, jp_ws_fetch, jp_serverapp,
                                                       node):
    stack, _ = node
    resp = await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": stack.pinned_url, "shape": "cpu-small", "max_seconds": 25,
         "budget_mist": 10**7}), request_timeout=180)
    s = json.loads(resp.body)
    kernel = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps(
        {"name": s["kernel_name"]}))).body)
    ws = KernelWS(await jp_ws_fetch("api", "kernels", kernel["id"], "channels"))
    written = await write_files(ws)
    final = await wait_results(jp_fetch, s["id"])
    assert "maximum duration" in final["reason"]
    assert final["results"]["state"] == "saved"
    assert files_under(Path(final["results"]["path"])) == written


# --- the provider's side, driven by the renter's signed calls ------------------------


class Session:
    """One renter's running session with one kernel, straight on the provider."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.key = KeyPair.generate()
        self.client = ProviderClient(stack.pinned_url, self.key)
        channel = open_channel(stack.ledger, self.key, stack, deposit=10**7, price=PRICE)

        async def start():
            created = await self.client.create_session(image="python", channel_id=channel)
            await self.client.wait_running(created["id"], timeout=150)
            kernel = await self.client.gateway(created["id"], created["access_token"],
                                               "POST", "api/kernels", {"name": "python3"})
            ws = KernelWS(await self.client.kernel_websocket(
                created["id"], created["access_token"], kernel["id"]))
            return created, ws

        created, self.ws = stack.run(start())
        self.id = created["id"]

    def probe(self, code: str) -> dict:
        result = self.stack.run(self.ws.execute(code, timeout=90))
        assert result.status == "ok", (result.error, result.stderr)
        return json.loads(result.stdout.strip().splitlines()[-1])


def results_of(client: ProviderClient, stack, sid: str) -> dict:
    return stack.run(_signed_json(client, "GET", _path(sid)))


def archive_of(client: ProviderClient, stack, sid: str) -> dict[str, bytes]:
    async def fetch() -> bytes:
        from jupyter_walnut.common.signed_requests import sign_request

        headers = sign_request(client.key, "GET", _path(sid) + "/archive", b"",
                               audience=await client.audience())
        sink = io.BytesIO()
        await client.download(_path(sid) + "/archive", headers, sink, 64 << 20)
        return sink.getvalue()

    with tarfile.open(fileobj=io.BytesIO(stack.run(fetch())), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_the_cap_leaves_a_file_out_whole_and_the_grace_period_ends(node):
    stack, _ = node
    alice = Session(stack)
    alice.probe("""
import json, os
open("small.bin", "wb").write(os.urandom(500_000))
open("big.bin", "wb").write(os.urandom(3 * 2**20))  # newest, past the 2 MiB cap
print(json.dumps({}))
""")
    stack.run(alice.client.stop_session(alice.id))
    manifest = results_of(alice.client, stack, alice.id)
    assert manifest["state"] == "saved"
    assert [f["path"] for f in manifest["files"]] == ["small.bin"]
    big = next(x for x in manifest["left_out"] if x["path"] == "big.bin")
    assert big["size"] == 3 * 2**20 and "2 MiB" in big["reason"]
    first = archive_of(alice.client, stack, alice.id)
    assert set(first) == {"small.bin"}  # big.bin is not in it, not even in part
    assert hashlib.sha256(first["small.bin"]).hexdigest() == manifest["files"][0]["sha256"]
    assert archive_of(alice.client, stack, alice.id) == first  # downloadable again later

    # another renter: the results are no more visible than the session
    mallory = ProviderClient(stack.pinned_url, KeyPair.generate())
    for method, path in (("GET", _path(alice.id)), ("DELETE", _path(alice.id)),
                         ("GET", _path(alice.id) + "/archive")):
        with pytest.raises(ProviderAPIError) as err:
            stack.run(_signed_json(mallory, method, path))
        assert err.value.status == 404
    assert results_of(alice.client, stack, alice.id)["state"] == "saved"

    # the expiry pass, driven to a time past the grace period (keep_hours = 1)
    assert stack.run(stack.sessions.expire_results_once(time.time() + 1800)) == []
    gone = stack.run(stack.sessions.expire_results_once(time.time() + 3601))
    assert alice.id in gone
    assert results_of(alice.client, stack, alice.id)["state"] == "expired"
    with pytest.raises(ProviderAPIError) as err:
        archive_of(alice.client, stack, alice.id)
    assert err.value.status == 409
    assert not stack.sessions.results.archive(alice.id).exists()


HANG_GATEWAY = r"""
import json, os, signal, threading
def parent(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
pid = os.getppid()
while b"gateway" not in open(f"/proc/{pid}/cmdline", "rb").read():
    pid = parent(pid)
open("before-the-hang.txt", "w").write("x")
threading.Timer(0.5, os.kill, (pid, signal.SIGSTOP)).start()  # after this cell's reply
print(json.dumps({"gateway": pid}))
"""


def test_a_hung_gateway_does_not_keep_the_session_from_stopping(node):
    stack, _ = node
    alice = Session(stack)
    alice.probe(HANG_GATEWAY)
    gateway_url = stack.store.get(alice.id).gateway_url

    async def hung() -> bool:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest
        try:
            await AsyncHTTPClient().fetch(HTTPRequest(gateway_url + "/api", request_timeout=1))
        except Exception as exc:
            return "Timeout" in type(exc).__name__ or "599" in str(exc)
        return False

    deadline = time.monotonic() + 30
    while not stack.run(hung()):  # the gateway stopped answering
        assert time.monotonic() < deadline

    patient = ProviderClient(stack.pinned_url, alice.key, timeout=170)
    stopped = stack.run(patient.stop_session(alice.id), timeout=180)
    assert stopped["status"] == "stopped"
    manifest = results_of(alice.client, stack, alice.id)
    assert manifest["state"] == "failed"
    assert manifest["reason"].startswith("results not saved: ")
    assert f"{SAVE_TIMEOUT_S} s" in manifest["reason"]


# --- a hostile provider's results ---------------------------------------------------


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **attrs):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, data if kind == tarfile.REGTYPE else None


GOOD = b"fine\n"
EVIL = b"planted by the provider\n"


def entry(name: str, data: bytes) -> dict:
    return {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# (what the manifest lists, what the archive holds), each also holding an honest file
HOSTILE_ARCHIVES = {
    "traversal": ([entry("../evil.txt", EVIL)], [member("../evil.txt", EVIL)]),
    "traversal not listed": ([], [member("../../evil.txt", EVIL)]),
    "absolute name": ([], [member("/tmp/walnut-evil.txt", EVIL)]),
    "symbolic link": ([entry("link", b"")], [member("link", kind=tarfile.SYMTYPE,
                                                    linkname="/etc/passwd")]),
    "hard link": ([], [member("hard", kind=tarfile.LNKTYPE, linkname="good.txt")]),
    "device": ([], [member("dev", kind=tarfile.CHRTYPE, devmajor=1, devminor=3)]),
    "bigger than its manifest": ([{**entry("data.bin", b"x" * 10)}],
                                 [member("data.bin", b"x" * 10_000)]),
    "other bytes than its hash": ([entry("data.bin", b"a" * 100)],
                                  [member("data.bin", b"b" * 100)]),
    "a file twice": ([entry("data.bin", b"a")], [member("data.bin", b"a"),
                                                 member("data.bin", b"a")]),
    "a name outside the manifest": ([], [member("extra.txt", EVIL)]),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-results")
    h = Hostile(tmp)
    try:
        yield h
    finally:
        h.stop()


@pytest.mark.parametrize("attack", sorted(HOSTILE_ARCHIVES))
async def test_a_hostile_providers_archive_is_refused_and_nothing_lands(
        tmp_path, hostile, attack):
    listed, members = HOSTILE_ARCHIVES[attack]
    manifest = {"session_id": "s-" + "1" * 16, "state": "saved", "bytes": 0,
                "files": [entry("good.txt", GOOD), *listed], "left_out": [],
                "kept_until": time.time() + 3600}
    archive = tar_gz([member("good.txt", GOOD), *members])

    def answer(method, path, body):
        if path.endswith("/results/archive"):
            return 200, archive
        if path.endswith("/results"):
            return 200, json.dumps(manifest).encode()
        return 404, b"{}"

    hostile.answer = answer
    root = tmp_path / "notebooks"
    (root / "deep" / "er").mkdir(parents=True)
    manager = RenterManager(tmp_path / "home", [hostile.pinned_url], use_registry=False,
                            ledger=LocalLedger(tmp_path / "ledger.sqlite"))
    manager.results_dir = str(root / "deep" / "er")
    now = time.time()
    sid = manifest["session_id"]
    manager.store.insert(RenterSession(
        id=sid, provider_url=hostile.pinned_url, provider_address=hostile.identity.address,
        node="hostile", shape="cpu-small", image="python", gpus=0, cpus=1, memory_mb=512,
        price_mist_per_second=PRICE, max_seconds=60, budget_mist=60 * PRICE,
        status="stopped", reason="stopped by you", created_at=now - 60, started_at=now - 50,
        ended_at=now, access_token="t" * 32, channel_id=None, settlement=Settlement.NONE,
        extra={}))
    home = tmp_path / "home"

    def written() -> set[Path]:
        return {p for p in tmp_path.rglob("*") if home not in p.parents}

    before = written()
    results = await manager.results.fetch(sid)
    assert results["state"] == "refused", results
    assert results["reason"]
    # nothing at all was written: not the honest file, not the evil one, no leftovers
    assert written() - before <= {root / "deep" / "er" / "walnut-results"}
    assert not Path("/tmp/walnut-evil.txt").exists()
    assert manager.get(sid).extra["results"]["state"] == "refused"
    manager.store.close()


def test_walnut_magics_print_the_warnings_before_the_end(node, tmp_path, monkeypatch):
    """`%walnut sessions` prints each warning as a line; before a remote cell, only a new
    one is printed."""
    from conftest import FUNDS
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    import jupyter_walnut.renter.manager as manager_module

    stack, ledger_path = node
    home = tmp_path / "renter"
    home.mkdir()
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    stack.ledger.fund(key.address, FUNDS)
    monkeypatch.setenv("WALNUT_HOME", str(home))
    monkeypatch.setenv("WALNUT_LEDGER", str(ledger_path))
    monkeypatch.setenv("WALNUT_PROVIDERS", stack.pinned_url)
    monkeypatch.setattr(manager_module, "_current", None)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_walnut")

    def run(cell: str):
        with capture_output() as cap:
            ip.run_cell(cell)
        return cap

    # a 40 s session: the budget warning at 30% spent (12 s), the end's in its last 10 s
    manager_module.RenterManager.current().warn_budget_fraction = 0.3
    try:
        launched = run(f"%walnut launch --offer cpu-small@{stack.pinned_url} "
                       f"--budget {40 * PRICE}")
        assert "running on results-node" in launched.stderr, launched.stderr
        deadline = time.monotonic() + 60
        while "of this session's budget" not in (cap := run("%walnut sessions")).stderr:
            assert time.monotonic() < deadline, cap.stderr
        assert cap.stderr.count("walnut: session ") == 1  # one line, the budget's
        seen = ""
        while "ends in about" not in seen:  # each remote cell, until the end is near
            seen += run("%%walnut run\nprint('remote')").stderr
            assert time.monotonic() < deadline, seen
        assert "of this session's budget is used" not in seen  # shown before: not again
    finally:
        run("%walnut stop --all")
        ip.run_line_magic("unload_ext", "jupyter_walnut")
        ip.user_ns.clear()
