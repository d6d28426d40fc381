"""Break-out attempts from inside a Docker session's kernel, each of which must fail.

A real provider node with the Docker runtime runs sessions; the code below is what a hostile
renter would type into a notebook cell. Covered elsewhere (tests/test_docker_runtime.py):
uid 1000, no capabilities, read-only root fs flags, no Docker socket file, limits in
`docker inspect`. Here: the network (other sessions, the provider's host services), setuid
escalation, writing where code could be planted, a fork bomb against the pids limit, memory
beyond the limit, and the workspace of an ended session.

Skipped without a Docker engine unless WALNUT_REQUIRE_DOCKER=1 (conftest.docker_or_skip).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import docker_or_skip, open_channel, provider_config
from kernel_ws import KernelWS

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.provider.runtimes.docker import resource_name
from jupyter_walnut.renter.provider_client import ProviderClient

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

MEMORY_MB = 512
PRICE = 1  # MIST per second
PIDS_LIMIT = 512  # SessionSpec's default; read back from the container below


class DockerNode:
    """A provider node with the Docker runtime on its own event loop in a thread, so that
    module-scoped sessions serve every test below."""

    def __init__(self, state_dir: Path, ledger) -> None:
        import docker

        from jupyter_walnut.provider.image import ensure_gateway_image
        from jupyter_walnut.provider.node import ProviderNode
        from jupyter_walnut.provider.runtimes.docker import DockerRuntime

        self.docker = docker.from_env()
        ensure_gateway_image(self.docker, progress=print)  # cached after the first build
        self.ledger = ledger
        self.identity = KeyPair.generate()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = provider_config(
            provider={"name": "breakout-node", "runtime": "docker"},
            shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": MEMORY_MB,
                     "price_per_second_mist": PRICE}],
            availability={"max_sessions": 4},
            # these tests send no vouchers: a long grace keeps sessions up for the module
            settlement={"grace_s": 3600})

        async def start():
            runtime = DockerRuntime(self.docker, provider_id="breakout-" + self.identity
                                    .address[2:12])
            node = ProviderNode(config, self.identity, state_dir, runtime=runtime,
                                ledger=ledger)
            node.sessions.metering_interval_s = 0.5
            node.sessions.watch_interval_s = 0.5
            # every interface, as the provider guide recommends for a public node: the
            # host-services test below must find the API listening on the bridge too
            return node, await node.start(host="0.0.0.0", port=0)

        self.node, self.port = self.run(start())
        self.url = f"http://127.0.0.1:{self.port}"

    def run(self, coro, timeout: float = 180):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.node.stop(stop_sessions=True))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.docker.close()


class Session:
    """One renter's running session with one kernel, driven from the node's loop."""

    def __init__(self, node, image: str = "python") -> None:
        """`node`: a DockerNode here, or a tests/stack.py StackNode (pinned TLS)."""
        self.node = node
        self.key = KeyPair.generate()
        self.client = ProviderClient(getattr(node, "pinned_url", node.url), self.key)
        channel = open_channel(node.ledger, self.key, node, price=PRICE)

        async def start():
            created = await self.client.create_session(image=image, channel_id=channel)
            await self.client.wait_running(created["id"], timeout=150)
            kernel = await self.client.gateway(created["id"], created["access_token"], "POST",
                                               "api/kernels", {"name": "python3"})
            return created, kernel

        created, self.kernel = node.run(start())
        self.id, self.token = created["id"], created["access_token"]
        self.ws: KernelWS | None = None

    @property
    def container(self):
        return self.node.docker.containers.get(self.node.node.store.get(self.id).runtime_ref)

    def ip(self) -> str:
        networks = self.container.attrs["NetworkSettings"]["Networks"]
        return networks[resource_name(self.id)]["IPAddress"]

    def bridge_gateway(self) -> str:
        networks = self.container.attrs["NetworkSettings"]["Networks"]
        return networks[resource_name(self.id)]["Gateway"]

    def execute(self, code: str, timeout: float = 90):
        async def run():
            if self.ws is None:
                self.ws = KernelWS(await self.client.kernel_websocket(self.id, self.token,
                                                                     self.kernel["id"]))
            return await self.ws.execute(code, timeout=timeout)

        return self.node.run(run(), timeout=timeout + 30)

    def probe(self, code: str, timeout: float = 90) -> dict:
        """Run `code`, which prints one JSON object last."""
        result = self.execute(code, timeout)
        assert result.status == "ok", (result.error, result.stderr)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def reconnect(self) -> None:
        if self.ws is not None:  # tornado objects belong to the node's loop
            self.node.loop.call_soon_threadsafe(self.ws.conn.close)
        self.ws = None

    def stop(self) -> dict:
        self.reconnect()
        return self.node.run(self.client.stop_session(self.id))


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    docker_or_skip()
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp("breakout")
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        docker_node = DockerNode(tmp / "provider", ledger)
        try:
            yield docker_node
        finally:
            docker_node.stop()


@pytest.fixture(scope="module")
def alice(node) -> Session:
    return Session(node)


@pytest.fixture(scope="module")
def bob(node) -> Session:
    return Session(node)


CONNECT = """
import json, socket
def reach(host, port, timeout=2.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "connected"
    except OSError as exc:
        return type(exc).__name__ + ": " + str(exc)
"""


def test_cannot_reach_another_sessions_container(alice: Session, bob: Session) -> None:
    bob_ip, alice_ip = bob.ip(), alice.ip()
    assert bob_ip != alice_ip and bob.bridge_gateway() != alice.bridge_gateway()
    # control: bob's gateway does listen on its container address, seen from inside bob
    own = bob.probe(CONNECT + f"print(json.dumps({{'own': reach({bob_ip!r}, 8888)}}))")
    assert own["own"] == "connected"
    # alice's kernel cannot open a TCP connection to it: separate bridge networks
    probe = alice.probe(CONNECT + f"print(json.dumps({{'bob': reach({bob_ip!r}, 8888)}}))")
    assert probe["bob"] != "connected", probe
    print(f"\nalice -> bob {bob_ip}:8888: {probe['bob']}")


def test_cannot_reach_provider_host_services(node: DockerNode, alice: Session,
                                             bob: Session) -> None:
    gateway = alice.bridge_gateway()
    # control: the API does answer on the bridge address from the host, so a refusal from
    # inside the session is the egress rules' doing, not a closed port
    with socket.create_connection((gateway, node.port), timeout=5):
        pass
    bob_host_port = int(bob.node.node.store.get(bob.id).gateway_url.rsplit(":", 1)[1])
    targets = {
        "provider API": (gateway, node.port),
        "bob's published gateway port": (gateway, bob_host_port),
        "docker API (tcp)": (gateway, 2375),
        "docker API (tls)": (gateway, 2376),
        "provider API on the container's own loopback": ("127.0.0.1", node.port),
    }
    calls = ", ".join(f"{name!r}: reach({host!r}, {port})"
                      for name, (host, port) in targets.items())
    code = CONNECT + f"print(json.dumps({{{calls}}}))"
    probe = alice.probe(code)
    print(f"\nfrom alice's kernel (bridge gateway {gateway}): {probe}")
    assert all(result != "connected" for result in probe.values()), probe
    # the provider itself is fine and still answers on loopback
    assert node.run(alice.client.health())["status"] == "ok"


ESCALATE = r"""
import json, os, subprocess, time

def euid_of(args):
    # start a setuid-root binary, read its effective uid from /proc while it runs
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    uids = None
    for _ in range(200):
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                uids = [l.split()[1:] for l in fh if l.startswith("Uid:")][0]
        except (OSError, IndexError):
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    try:
        proc.communicate(b"\n", timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return uids

def attempt(fn):
    try:
        fn()
        return "succeeded"
    except (OSError, subprocess.SubprocessError) as exc:
        return type(exc).__name__

def plant(path):
    with open(path, "w") as fh:
        fh.write("print('planted')\n")

setuid = sorted(p for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin") if os.path.isdir(d)
                for p in (os.path.join(d, n) for n in os.listdir(d))
                if os.path.isfile(p) and os.stat(p).st_mode & 0o4000)
runs = {"su": ["su", "root", "-c", "id -u"], "passwd": ["passwd"], "newgrp": ["newgrp", "root"],
        "mount": ["mount", "-t", "tmpfs", "x", "/mnt"]}
import sys, walnut_gateway
out = {
    "setuid_binaries": setuid,
    "euid": {name: euid_of(args) for name, args in runs.items()
             if any(p.endswith("/" + name) for p in setuid)},
    "no_new_privs": [l.split()[1] for l in open("/proc/self/status")
                     if l.startswith("NoNewPrivs")][0],
    "setuid0": attempt(lambda: os.setuid(0)),
    "setgid0": attempt(lambda: os.setgid(0)),
    "write_etc_passwd": attempt(lambda: open("/etc/passwd", "a").close()),
    # the image's own packages (the session's writable env over them is its own to change)
    "plant_site_packages": attempt(lambda: plant(os.path.join(
        os.path.dirname(os.path.dirname(walnut_gateway.__file__)), "sitecustomize.py"))),
    "plant_stdlib": attempt(lambda: plant(os.path.join(os.path.dirname(os.__file__),
                                                       "sitecustomize.py"))),
    "plant_usr_local_bin": attempt(lambda: plant("/usr/local/bin/python3")),
    "write_root": attempt(lambda: plant("/evil")),
    "chmod_setuid_in_tmp": attempt(lambda: (plant("/tmp/x"), os.chmod("/tmp/x", 0o4755))),
    "mount": attempt(lambda: subprocess.run(["mount", "-t", "tmpfs", "x", "/mnt"],
                                            check=True, capture_output=True))
             if os.path.exists("/usr/bin/mount") else "no mount",
    "docker_sock": [p for p in ("/var/run/docker.sock", "/run/docker.sock")
                    if os.path.exists(p)],
    "uid": os.getuid(), "euid_self": os.geteuid(),
}
print(json.dumps(out))
"""


def test_setuid_binaries_and_root_writes_cannot_escalate(alice: Session) -> None:
    probe = alice.probe(ESCALATE)
    print(f"\nescalation attempts: {json.dumps(probe, indent=1)}")
    assert probe["uid"] == probe["euid_self"] == 1000
    assert probe["no_new_privs"] == "1"
    # the image has setuid-root binaries; with no-new-privileges they run as 1000
    assert probe["euid"], "expected setuid binaries (su, passwd, ...) to try"
    for name, uids in probe["euid"].items():
        assert uids is not None and set(uids) == {"1000"}, (name, uids)
    for key in ("setuid0", "setgid0", "write_etc_passwd", "plant_site_packages",
                "plant_stdlib", "plant_usr_local_bin", "write_root"):
        assert probe[key] != "succeeded", (key, probe[key])
    # /tmp is writable, but a setuid bit there would mean nothing (nosuid, and no root)
    assert probe["mount"] != "succeeded"
    assert probe["docker_sock"] == []
    assert "nosuid" in alice.container.attrs["HostConfig"]["Tmpfs"]["/tmp"]


FORK_BOMB = r"""
import json, subprocess, time
limit, procs, error = %d, [], None
deadline = time.monotonic() + 60
try:
    while len(procs) < limit + 100 and time.monotonic() < deadline:
        procs.append(subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
except OSError as exc:
    error = f"{type(exc).__name__}: {exc}"
started = len(procs)
for proc in procs:
    proc.kill()
for proc in procs:
    proc.wait()
print(json.dumps({"started": started, "error": error}))
"""


def test_fork_bomb_hits_the_pids_limit(alice: Session) -> None:
    limit = alice.container.attrs["HostConfig"]["PidsLimit"]
    assert limit == PIDS_LIMIT
    probe = alice.probe(FORK_BOMB % limit, timeout=150)
    print(f"\nfork bomb: {probe} (pids limit {limit})")
    assert probe["error"] is not None, "the pids limit was never hit"
    assert "Resource temporarily unavailable" in probe["error"] or "11" in probe["error"]
    assert probe["started"] < limit
    # the session survives its own fork bomb
    assert alice.execute("print('alive')").stdout == "alive\n"


def oom_kills(session: Session) -> int:
    """OOM kills counted by the container's memory cgroup (v2 memory.events or v1
    memory.oom_control, whichever this engine uses)."""
    code, out = session.container.exec_run(
        "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control")
    fields = dict(line.split(None, 1) for line in out.decode().splitlines() if " " in line)
    assert "oom_kill" in fields, f"no OOM counter in the container's cgroup: {out!r}"
    return int(fields["oom_kill"])


def test_memory_beyond_the_limit_kills_the_kernel_not_the_host(node: DockerNode,
                                                               alice: Session) -> None:
    async def allocate_too_much():
        ws = KernelWS(await alice.client.kernel_websocket(alice.id, alice.token,
                                                          alice.kernel["id"]))
        try:
            return await ws.execute_until_restart(
                f"blob = b'x' * ({2 * MEMORY_MB} * 2**20)\nprint('allocated')", timeout=90)
        finally:
            ws.conn.close()

    alice.reconnect()
    oom_before = oom_kills(alice)
    outcome, output = node.run(allocate_too_much(), timeout=150)
    print(f"\nOOM cell: {outcome} output={output}")
    assert "allocated\n" not in output, "allocated beyond the limit"
    assert outcome == "restarting", (outcome, output)
    assert oom_kills(alice) > oom_before, "the kernel died, but not by the memory limit"
    # the gateway (the container), the provider and the session survive
    assert alice.container.status == "running"
    assert node.run(alice.client.health())["status"] == "ok"
    assert node.run(alice.client.get_session(alice.id))["status"] == "running"
    # the kernel's model says why it restarted, and turns idle once the new kernel answers
    # (stock jupyter_server kept the dead kernel's "busy" for ever)
    kernel_path = f"api/kernels/{alice.kernel['id']}"
    states, deadline = [], time.monotonic() + 60
    while not states or states[-1] != "idle":
        model = node.run(alice.client.gateway(alice.id, alice.token, "GET", kernel_path))
        assert f"ran out of the session's memory of {MEMORY_MB} MiB" in model["reason"], model
        if not states or states[-1] != model["execution_state"]:
            states.append(model["execution_state"])
        assert time.monotonic() < deadline, f"the restarted kernel never turned idle: {states}"
        time.sleep(0.2)  # polling the gateway's model; bounded by the deadline
    assert set(states) <= {"restarting", "idle"}, states
    result = alice.execute("print('after oom', 'blob' in globals())", timeout=60)
    assert result.stdout == "after oom False\n"  # a new kernel, running code again


def test_workspace_is_wiped_when_the_session_ends(node: DockerNode) -> None:
    first = Session(node)
    volume = resource_name(first.id)
    probe = first.probe("import json, os\nopen('secret.txt', 'w').write('alice-data')\n"
                        "print(json.dumps({'cwd': os.getcwd(), 'ls': os.listdir('.')}))")
    assert probe["cwd"] == "/home/walnut/work" and "secret.txt" in probe["ls"]
    assert node.docker.volumes.get(volume)
    assert first.stop()["status"] == "stopped"
    assert not [v for v in node.docker.volumes.list(filters={"name": volume})
                if v.name == volume]
    second = Session(node)
    try:
        probe = second.probe(
            "import json, os, glob\nprint(json.dumps({'ls': os.listdir('.'), 'found': "
            "glob.glob('/home/**/secret.txt', recursive=True) + "
            "glob.glob('/tmp/**/secret.txt', recursive=True)}))")
        assert probe == {"ls": [], "found": []} or (
            "secret.txt" not in probe["ls"] and probe["found"] == []), probe
    finally:
        second.stop()
