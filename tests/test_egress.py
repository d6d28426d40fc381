"""The egress policy, played by a renter's cell against the real stack (Docker + pinned TLS).

The test builds its own small "LAN" behind this host: a network namespace on a veth pair with
TCP servers on a private address (10.231.x.2), a link-local one (169.254.231.2, the cloud
metadata range) and a public-looking one from the benchmarking range (198.18.x.2, routed to
the namespace only: nothing outside this machine is contacted), plus a server on the host's
0.0.0.0 and the provider API itself on 0.0.0.0. From the host every one of them answers;
from a session with `egress = "internet"` only the public-looking one does, and with
`"offline"` none.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import docker_or_skip, provider_config
from stack import StackNode
from test_container_breakout import CONNECT, Session

from jupyter_walnut.provider.runtimes import egress

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

PORT = 18731  # the namespace's servers (their own namespace: no clash with the host)
SERVER = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(64)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    conn.sendall(b"lan")
    conn.close()
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Lan:
    """A namespace behind a veth pair, with addresses from three ranges and a TCP server."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns, host_if, ns_if = f"wtest-{tag}", f"wvh{tag}", f"wvn{tag}"
        n = random.randint(1, 250)
        self.private, self.link_local, self.public = (f"10.231.{n}.2", f"169.254.231.{n}",
                                                      f"198.18.{n}.2")
        host_side = [f"10.231.{n}.1/24", f"198.18.{n}.1/24"]  # the link-local one: a route
        self.cleanup: list[list[str]] = []
        try:
            sh("ip", "netns", "add", self.ns)
            self.cleanup.append(["ip", "netns", "del", self.ns])
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            self.cleanup.insert(0, ["ip", "link", "del", host_if])
            sh("ip", "link", "set", ns_if, "netns", self.ns)
            for address in host_side:
                sh("ip", "addr", "add", address, "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "route", "add", f"{self.link_local}/32", "dev", host_if)
            inside = ["ip", "netns", "exec", self.ns]
            for address in (f"{self.private}/24", f"{self.public}/24", f"{self.link_local}/16"):
                sh(*inside, "ip", "addr", "add", address, "dev", ns_if)
            sh(*inside, "ip", "link", "set", ns_if, "up")
            sh(*inside, "ip", "link", "set", "lo", "up")
            sh(*inside, "ip", "route", "add", "default", "dev", ns_if)
            self.server = subprocess.Popen([*inside, sys.executable, "-c", SERVER, str(PORT)],
                                           stdout=subprocess.PIPE, text=True)
            assert self.server.stdout.readline().strip() == "ready"
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.kill()
            server.wait(10)
        for args in self.cleanup:
            subprocess.run(args, capture_output=True, timeout=30, check=False)


class HostServer:
    """A TCP server on the host's 0.0.0.0, like any service the provider's machine runs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("0.0.0.0", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                conn.close()

    def close(self) -> None:
        self.sock.close()


def reachable_from_host(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def host_addresses() -> list[str]:
    """This machine's own IPv4 addresses (eth0's, docker0's, the test LAN's), leaving out
    loopback and session bridges, which come and go with other tests' sessions."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return [row[3].split("/")[0] for row in rows
            if row[1] != "lo" and not row[1].startswith(("wn", "br-"))]


@pytest.fixture(scope="module")
def lan():
    docker_or_skip()
    if os.geteuid() != 0:
        pytest.fail("the egress policy and this test need root (iptables, network namespaces)")
    net, server = Lan(), HostServer()
    try:
        yield net, server
    finally:
        server.close()
        net.close()


def make_node(tmp_path_factory, egress_policy: str):
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp(f"egress-{egress_policy}")
    config = provider_config(
        provider={"name": f"egress-{egress_policy}", "runtime": "docker"},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 512,
                 "price_per_second_mist": 1, "disk_mb": 256}],
        network={"egress": egress_policy}, settlement={"grace_s": 3600})
    ledger = LocalLedger(tmp / "ledger.sqlite")
    # on every interface, as the provider guide recommends for a public node
    return StackNode(tmp / "provider", ledger, config=config, runtime="docker", tls=True,
                     host="0.0.0.0"), ledger


@pytest.fixture(scope="module")
def internet_node(tmp_path_factory, lan):
    node, ledger = make_node(tmp_path_factory, "internet")
    try:
        yield node
    finally:
        node.stop()
        ledger.close()


@pytest.fixture(scope="module")
def offline_node(tmp_path_factory, lan):
    node, ledger = make_node(tmp_path_factory, "offline")
    try:
        yield node
    finally:
        node.stop()
        ledger.close()


def targets(lan, node: StackNode, session: Session) -> dict[str, tuple[str, int]]:
    net, server = lan
    gateway = session.bridge_gateway()
    found = {
        "private 10.231/16 server": (net.private, PORT),
        "link-local 169.254 server": (net.link_local, PORT),
        "host service on 0.0.0.0 via the bridge": (gateway, server.port),
        "provider API on 0.0.0.0 via the bridge": (gateway, node.port),
    }
    for address in host_addresses():
        found[f"provider API on the host's {address}"] = (address, node.port)
    return found


def probe(session: Session, where: dict[str, tuple[str, int]]) -> dict[str, str]:
    calls = ", ".join(f"{name!r}: reach({host!r}, {port})" for name, (host, port) in where.items())
    return session.probe(CONNECT + f"print(json.dumps({{{calls}}}))", timeout=150)


def test_internet_egress_reaches_public_addresses_only(lan, internet_node) -> None:
    net, _ = lan
    session = Session(internet_node)
    blocked = targets(lan, internet_node, session)
    # control: from the host every target answers, so a refusal below is the policy's doing
    for name, (host, port) in {**blocked, "public": (net.public, PORT)}.items():
        assert reachable_from_host(host, port), f"{name} ({host}:{port}) is down on the host"
    result = probe(session, {**blocked, "public-looking 198.18/15 server": (net.public, PORT)})
    print(f"\nfrom a session (egress = internet): {json.dumps(result, indent=1)}")
    assert result.pop("public-looking 198.18/15 server") == "connected"
    assert all(outcome != "connected" for outcome in result.values()), result
    rules = egress.installed(session.id)
    assert any("169.254.0.0/16" in rule and "DROP" in rule for rule in rules["FWD"]), rules
    assert rules["IN"][-1].endswith("-j DROP"), rules
    # the provider still answers its renter through the proxy
    assert session.execute("print('alive')").stdout == "alive\n"
    session.stop()
    wait_gone(session.id)


def test_offline_egress_reaches_nothing(lan, offline_node) -> None:
    net, _ = lan
    session = Session(offline_node)
    where = {**targets(lan, offline_node, session),
             "public-looking 198.18/15 server": (net.public, PORT)}
    result = probe(session, where)
    print(f"\nfrom a session (egress = offline): {json.dumps(result, indent=1)}")
    assert all(outcome != "connected" for outcome in result.values()), result
    assert session.execute("print('alive')").stdout == "alive\n"
    session.stop()
    wait_gone(session.id)


def wait_gone(session_id: str, deadline_s: float = 60) -> None:
    """A stopped session leaves no rules behind."""
    end = time.monotonic() + deadline_s
    while egress.installed(session_id):
        assert time.monotonic() < end, "the session's egress rules outlived it"
        time.sleep(0.2)  # polling iptables, bounded by the deadline
