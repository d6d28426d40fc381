"""The node's package cache (devpi-server), played by renters' cells on real provider nodes.

The default stack (Docker + pinned TLS) runs sessions whose `PIP_INDEX_URL` is the node's
cache, reached through the session's own relay; the cache's upstream is a local PEP 503 index
of wheels downloaded on the host (tests/package_index.py), so nothing here needs a registry.
A session's `%pip install tabulate` works and imports at once; a second session's install is
served from the cache (devpi's log shows the second file request answered without an upstream
fetch, and the upstream saw one download); a renter's cell that tries to write into the cache
(users, indexes, uploads, the mirror's settings, forged headers) is refused and the cached file
is unchanged; one session cannot reach another's relay; the cache ends with the node. The
process runtime leg installs from the cache on loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import urllib.request

import psutil
import pytest
from conftest import docker_or_skip, provider_config
from package_index import PackageIndex, host_wheels
from stack import StackNode
from test_container_breakout import CONNECT, Session

from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.provider.runtimes import egress
from jupyter_walnut.renter.provider_client import ProviderClient

pytestmark = [pytest.mark.timeout(900)]

SHAPE = {"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 1024,
         "price_per_second_mist": 1, "disk_mb": 512}


def make_node(tmp, index: PackageIndex, runtime: str, egress_policy: str = "internet",
              **packages) -> StackNode:
    config = provider_config(
        provider={"name": f"packages-{runtime}", "runtime": runtime}, shapes=[SHAPE],
        settlement={"grace_s": 3600}, network={"egress": egress_policy},
        packages={"upstream_url": index.url, **packages})
    ledger = LocalLedger(tmp / "ledger.sqlite")
    node = StackNode(tmp / "provider", ledger, config=config, runtime=runtime,
                     tls=runtime == "docker")
    node.closing_ledger = ledger
    return node


def close_node(node: StackNode) -> None:
    cache = node.node.package_cache
    proc = cache.proc if cache is not None else None
    node.stop()
    with contextlib.suppress(Exception):  # a restarted node's ledger may be closed already
        node.closing_ledger.close()
    if proc is not None and proc.poll() is None:  # never leave a devpi behind
        proc.kill()
        proc.wait(10)


def wait_cache(node: StackNode) -> None:
    cache = node.node.package_cache
    assert node.run(cache.wait_ready(), timeout=360), f"the cache did not start: {cache.reason}"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    upstream = PackageIndex(host_wheels())
    try:
        yield upstream
    finally:
        upstream.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory, index):
    docker_or_skip()
    node = make_node(tmp_path_factory.mktemp("packages-docker"), index, "docker")
    try:
        wait_cache(node)
        yield node
    finally:
        close_node(node)


@pytest.fixture(scope="module")
def alice(node) -> Session:
    return Session(node)


@pytest.fixture(scope="module")
def bob(node) -> Session:
    return Session(node)


def pip_install(session: Session, package: str) -> str:
    result = session.execute(f"%pip install {package}", timeout=240)
    assert result.status == "ok", (result.error, result.stderr)
    out = result.stdout + result.stderr
    assert f"Successfully installed {package.split()[0]}" in out, out
    return out


def session_env(session: Session) -> dict:
    return session.probe("import json, os; print(json.dumps({k: v for k, v in os.environ.items()"
                         " if k.startswith(('PIP_', 'WALNUT_PACKAGE', 'WALNUT_EGRESS'))}))")


def test_install_in_a_running_session_then_a_second_session_is_served_from_the_cache(
        node, index, alice, bob) -> None:
    cache = node.node.package_cache
    env = session_env(alice)
    assert env["PIP_INDEX_URL"] == env["WALNUT_PACKAGE_INDEX"] == \
        f"http://walnut-packages:{cache.port}/root/pypi/+simple/", env
    assert env["WALNUT_EGRESS"] == "internet"
    before = cache.stats()

    out = pip_install(alice, "tabulate")
    assert f"walnut-packages:{cache.port}" in out, out  # pip names the index it used
    imported = alice.probe("import json, tabulate; print(json.dumps("
                           "{'file': tabulate.__file__, 'table': tabulate.tabulate([[1, 2]])}))")
    assert imported["file"].startswith("/home/walnut/work/.walnut/env/"), imported
    assert imported["table"].split() == ["-", "-", "1", "2", "-", "-"], imported
    assert index.file_fetches("tabulate") == 1
    first = cache.stats()
    assert first["upstream_fetches"] == before["upstream_fetches"] + 1, first

    pip_install(bob, "tabulate")
    assert bob.probe("import json, tabulate; print(json.dumps(tabulate.__version__))")
    second = cache.stats()
    print(f"\ncache evidence (devpi's log): after the first install {first}, after the "
          f"second {second}; upstream requests {dict(index.requests)}")
    assert index.file_fetches("tabulate") == 1  # the upstream served the file once
    assert second["upstream_fetches"] == first["upstream_fetches"]
    assert second["hits"] == first["hits"] + 1  # the second download came from devpi's disk


ATTACK = r"""
import base64, json, os, urllib.request, urllib.error
base = os.environ["WALNUT_PACKAGE_INDEX"].split("/root/pypi/")[0]
def call(method, path, body=None, headers=None, kind="application/json"):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Accept": "application/json", "Content-Type": kind, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
def auth(user, password):
    return {"X-Devpi-Auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
forged = {"X-Outside-Url": "http://evil.invalid", "X-Forwarded-For": "127.0.0.1",
          "X-Real-IP": "127.0.0.1", "Host": "127.0.0.1", **auth("root", "")}
boundary = "walnutboundary"
upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload"
          f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ntabulate"
          f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n0.10.0"
          f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; "
          f"filename=\"tabulate-0.10.0-py3-none-any.whl\"\r\n\r\nPWNED\r\n--{boundary}--\r\n"
          ).encode()
mirror = ["mirror_url=http://evil.invalid/simple/"]
print(json.dumps({
    "create a user": call("PUT", "/mallory", {"password": "x", "email": "m@x.invalid"}),
    "log in as root": call("POST", "/+login", {"user": "root", "password": "root"}),
    "create an index under root": call("PUT", "/root/evil", {"type": "stage"}),
    "create an index under a new user": call("PUT", "/mallory/dev", {"type": "stage"}),
    "upload to root/pypi": call("POST", "/root/pypi/", upload,
                                kind=f"multipart/form-data; boundary={boundary}"),
    "PATCH root/pypi's mirror": call("PATCH", "/root/pypi", mirror),
    "PUT root/pypi": call("PUT", "/root/pypi", {"type": "mirror",
                                                "mirror_url": "http://evil.invalid/simple/"}),
    "PATCH with a guessed root password": call("PATCH", "/root/pypi", mirror,
                                               auth("root", "root")),
    "PATCH with forged headers": call("PATCH", "/root/pypi", mirror, forged),
    "delete root/pypi": call("DELETE", "/root/pypi", None, forged),
    "delete root": call("DELETE", "/root", None, forged),
    "change root's password": call("PATCH", "/root", {"password": "owned"}, forged),
    "delete the cached file": call("DELETE", FILE, None, forged),
    "upload with forged headers": call("POST", "/root/pypi/", upload, forged,
                                       kind=f"multipart/form-data; boundary={boundary}"),
}))
"""


def cached_file(node: StackNode, project: str) -> tuple[str, bytes]:
    """(path, bytes) of `project`'s file in the cache, as the host reads it."""
    cache = node.node.package_cache
    page = urllib.request.urlopen(f"{cache.url}/root/pypi/+simple/{project}/",
                                  timeout=30).read().decode()
    href = page.split('href="')[1].split('"')[0].split("#")[0]
    path = "/root/pypi/" + href.split("/root/pypi/")[-1] if "/root/pypi/" in href else \
        urllib.request.urljoin(f"/root/pypi/+simple/{project}/", href)
    return path, urllib.request.urlopen(cache.url + path.replace("+", "%2B"),
                                        timeout=30).read()


def test_a_session_cannot_write_into_the_cache(node, index, alice) -> None:
    if index.file_fetches("tabulate") == 0:  # run alone: the cache holds tabulate first
        pip_install(alice, "tabulate")
    path, data = cached_file(node, "tabulate")
    wheel = index.wheel("tabulate").read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(wheel).hexdigest()

    result = alice.probe(f"FILE = {path!r}\n" + ATTACK, timeout=200)
    print(f"\nfrom a session's kernel against the cache: {json.dumps(result, indent=1)}")
    assert all(400 <= status < 500 for status in result.values()), result

    cache = node.node.package_cache
    config = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{cache.url}/root/pypi", headers={"Accept": "application/json"}), timeout=30).read())
    assert config["result"]["mirror_url"] == index.url  # the node's upstream, still
    users = json.loads(urllib.request.urlopen(urllib.request.Request(
        cache.url + "/", headers={"Accept": "application/json"}), timeout=30).read())
    assert sorted(users["result"]) == ["root"], users
    assert sorted(users["result"]["root"]["indexes"]) == ["pypi"], users
    _, after = cached_file(node, "tabulate")
    assert hashlib.sha256(after).hexdigest() == hashlib.sha256(wheel).hexdigest()
    # and a renter still installs the genuine file
    pip_install(alice, "tabulate --force-reinstall --no-deps")


def test_one_sessions_relay_is_not_reachable_from_another(node, alice, bob) -> None:
    port = node.node.package_cache.port
    a_gateway, b_gateway = alice.bridge_gateway(), bob.bridge_gateway()
    assert a_gateway != b_gateway
    # control: from the host, both relays answer
    for gateway in (a_gateway, b_gateway):
        with socket.create_connection((gateway, port), timeout=5):
            pass
    own = bob.probe(CONNECT + "import socket\n" + "print(json.dumps({"
                    f"'own': reach({b_gateway!r}, {port}), "
                    "'name': socket.gethostbyname('walnut-packages'), "
                    f"'alice': reach({a_gateway!r}, {port}), "
                    f"'cache on the host loopback': reach('127.0.0.1', {port})}}))")
    print(f"\nfrom bob's session: {own}")
    assert own["name"] == b_gateway
    assert own["own"] == "connected"
    assert own["alice"] != "connected", own
    assert own["cache on the host loopback"] != "connected", own
    rules = egress.installed(bob.id)["IN"]
    accepts = [r for r in rules if "ACCEPT" in r]
    assert accepts == [f"-A {rules[0].split()[1]} -d {b_gateway}/32 -p tcp -m tcp --dport "
                       f"{port} -j ACCEPT"], rules
    assert rules[-1].endswith("-j DROP")


def test_offline_sessions_still_install_from_the_cache(tmp_path, index) -> None:
    docker_or_skip()
    offline = make_node(tmp_path, index, "docker", "offline")
    try:
        wait_cache(offline)
        session = Session(offline)
        assert session_env(session)["WALNUT_EGRESS"] == "offline"
        pip_install(session, "toolz")
        assert session.probe("import json, toolz; print(json.dumps(toolz.__name__))") == "toolz"
        session.stop()
    finally:
        close_node(offline)


def test_the_cache_ends_with_its_node(tmp_path, index) -> None:
    node = make_node(tmp_path, index, "process")
    try:
        wait_cache(node)
        cache = node.node.package_cache
        pid, port = cache.proc.pid, cache.port
        command = psutil.Process(pid).cmdline()
        assert command[command.index("--unix-socket") + 1] == cache.socket_path
        # devpi listens on no network address; the node's loopback relay serves it
        assert not [c for c in psutil.Process(pid).net_connections("inet")
                    if c.status == psutil.CONN_LISTEN]
        assert json.loads(urllib.request.urlopen(urllib.request.Request(
            cache.url + "/+api", headers={"Accept": "application/json"}), timeout=30).read())
        print(f"\ndevpi-server started in {cache.start_seconds:.1f} s")
    finally:
        close_node(node)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not os.path.exists(cache.socket_path) or not psutil.pid_exists(pid)
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_a_cache_that_cannot_start_leaves_sessions_without_an_index(tmp_path, index,
                                                                    caplog) -> None:
    with socket.socket() as busy:  # the configured port is taken: devpi cannot listen
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        node = make_node(tmp_path, index, "process", port=busy.getsockname()[1])
        try:
            cache = node.node.package_cache
            assert not node.run(cache.wait_ready(), timeout=360)
            assert cache.state == "failed" and cache.reason
            assert cache.proc is None
            env = cache.session_env("s")
            assert "PIP_INDEX_URL" not in env and env["WALNUT_EGRESS"] == "internet"
        finally:
            close_node(node)
    lines = [r.getMessage() for r in caplog.records if "package cache" in r.getMessage()]
    assert len(lines) == 1 and "not started" in lines[0], lines


def test_process_sessions_install_from_the_cache_on_loopback(tmp_path, index) -> None:
    node = make_node(tmp_path, index, "process")
    try:
        wait_cache(node)
        cache = node.node.package_cache
        session = Session(node)
        env = session_env(session)
        assert env["PIP_INDEX_URL"] == f"http://127.0.0.1:{cache.port}/root/pypi/+simple/"
        # this host's own pip.conf adds local indexes: the session's pip must not read it
        assert env.get("PIP_CONFIG_FILE") == os.devnull, env
        before = index.file_fetches("toolz")
        pip_install(session, "toolz")
        found = session.probe("import json, toolz; print(json.dumps(toolz.__file__))")
        assert "/.walnut/env/" in found, found
        assert index.file_fetches("toolz") == before + 1
        deadline = time.monotonic() + 30
        while cache.stats()["file_requests"] < 1:
            assert time.monotonic() < deadline, cache.stats()
            time.sleep(0.2)  # devpi writes its log line after answering
        session.stop()
    finally:
        close_node(node)


def test_a_session_adopted_after_a_provider_restart_reaches_the_cache_again(tmp_path,
                                                                            index) -> None:
    docker_or_skip()
    first = make_node(tmp_path, index, "docker")
    second = None
    try:
        wait_cache(first)
        session = Session(first)
        port, gateway = first.node.package_cache.port, session.bridge_gateway()
        first.stop(stop_sessions=False)  # the provider goes away; the container keeps running
        with pytest.raises(OSError):  # its relay went with it
            socket.create_connection((gateway, port), timeout=2).close()
        second = StackNode(first.state_dir, first.ledger, identity=first.identity,
                           config=first.config, runtime="docker", tls=True)
        assert second.node.package_cache.port == port  # what the session's env names
        wait_cache(second)
        session.node, session.ws = second, None
        session.client = ProviderClient(second.pinned_url, session.key)
        pip_install(session, "toolz")
        assert session.probe("import json, toolz; print(json.dumps(toolz.__name__))") == "toolz"
        session.stop()
    finally:
        if second is not None:
            close_node(second)
        else:
            close_node(first)
        first.closing_ledger.close()


def test_a_file_that_does_not_match_the_upstreams_hash_is_never_cached(tmp_path) -> None:
    upstream = PackageIndex(host_wheels())
    upstream.tampered.add("toolz")
    node = make_node(tmp_path, upstream, "process")
    try:
        wait_cache(node)
        cache = node.node.package_cache
        page = urllib.request.urlopen(f"{cache.url}/root/pypi/+simple/toolz/",
                                      timeout=30).read().decode()
        href = page.split('href="')[1].split('"')[0]
        advertised = href.split("#sha256=")[1]
        assert advertised == hashlib.sha256(upstream.wheel("toolz").read_bytes()).hexdigest()
        url = urllib.request.urljoin(f"{cache.url}/root/pypi/+simple/toolz/", href)

        def fetch() -> str | None:
            try:
                data = urllib.request.urlopen(url.split("#")[0].replace("+f", "%2Bf"),
                                              timeout=60).read()
            except OSError:
                return None
            return hashlib.sha256(data).hexdigest()

        for attempt in (1, 2):  # devpi refuses the bad bytes, and keeps none of them
            assert fetch() != advertised
            assert upstream.file_fetches("toolz") == attempt  # fetched again: nothing cached
        upstream.tampered.clear()  # the upstream is healthy again: the genuine file
        assert fetch() == advertised
        # devpi stores a file after streaming it, so the very next fetch may still go upstream;
        # once stored, fetches are served from the cache
        deadline = time.monotonic() + 60
        while True:
            before = upstream.file_fetches("toolz")
            assert fetch() == advertised
            if upstream.file_fetches("toolz") == before:
                break
            assert time.monotonic() < deadline, "devpi never kept the genuine file"
    finally:
        close_node(node)
        upstream.close()
