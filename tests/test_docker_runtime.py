"""The Docker runtime against a real engine and the offline-built gateway image.

Skipped (one line why) when no Docker engine answers, unless WALNUT_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_walnut.provider import image as image_mod
from jupyter_walnut.provider.runtimes import egress
from jupyter_walnut.provider.runtimes.base import RuntimeError_, RuntimeHandle, SessionSpec
from jupyter_walnut.provider.runtimes.docker import (
    DockerRuntime,
    docker_available,
    resource_name,
)

# the first test may build the image (about a minute)
pytestmark = [pytest.mark.timeout(600), pytest.mark.asyncio]

READY_DEADLINE = 60.0
MEMORY_MB = 768
CPUS = 1.5
PIDS = 300


# --- fixtures -----------------------------------------------------------------------------


@dataclass
class Engine:
    client: object
    image: str
    provider_id: str


@dataclass
class Session:
    runtime: DockerRuntime
    handle: RuntimeHandle
    spec: SessionSpec


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    ok, reason = docker_available()
    if not ok:
        if os.environ.get("WALNUT_REQUIRE_DOCKER") == "1":
            pytest.fail(f"WALNUT_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    import docker

    client = docker.from_env()
    tag = image_mod.ensure_gateway_image(client, progress=print)
    provider_id = f"test-{uuid.uuid4().hex[:8]}"
    yield Engine(client, tag, provider_id)
    # whatever a failed test left behind
    for container in client.containers.list(
            all=True, filters={"label": f"walnut.provider={provider_id}"}):
        session_id = container.labels["walnut.session"]
        asyncio.run(DockerRuntime(client, provider_id).stop(
            RuntimeHandle(session_id, "", container.id)))
    client.close()


def make_spec(engine: Engine, **changes) -> SessionSpec:
    spec = SessionSpec(
        session_id=f"t{uuid.uuid4().hex[:10]}",
        image=engine.image,
        gpus=(),
        cpus=CPUS,
        memory_mb=MEMORY_MB,
        gateway_token=secrets.token_urlsafe(24),
        workspace=Path("/nonexistent-unused-by-docker"),
        max_kernels=2,
        pids_limit=PIDS,
    )
    return replace(spec, **changes)


def http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_ready(handle: RuntimeHandle, token: str, deadline: float = READY_DEADLINE) -> None:
    """Poll /api/kernelspecs until it answers 200, or fail with the gateway's logs."""
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        try:
            last = http_status(f"{handle.gateway_url}/api/kernelspecs", token)
            if last == 200:
                return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.2)  # poll interval, not synchronisation: the deadline decides
    raise AssertionError(f"gateway not ready after {deadline} s (last: {last})")


@pytest.fixture(scope="module")
def session(engine: Engine) -> Iterator[Session]:
    runtime = DockerRuntime(engine.client, engine.provider_id)
    spec = make_spec(engine)
    handle = asyncio.run(runtime.start(spec))
    try:
        wait_ready(handle, spec.gateway_token)
    except AssertionError:
        print(asyncio.run(runtime.logs(handle)))
        asyncio.run(runtime.stop(handle))
        raise
    yield Session(runtime, handle, spec)
    asyncio.run(runtime.stop(handle))


# --- kernel helpers -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def kernel(session: Session) -> AsyncIterator[str]:
    """A kernel in the session's gateway, shut down afterwards (the session has a limit)."""
    auth = {"Authorization": f"token {session.spec.gateway_token}"}
    url = f"{session.handle.gateway_url}/api/kernels"
    response = await AsyncHTTPClient().fetch(url, method="POST", headers=auth,
                                             body=json.dumps({"name": "python3"}))
    assert response.code == 201
    kernel_id = json.loads(response.body)["id"]
    try:
        yield kernel_id
    finally:
        response = await AsyncHTTPClient().fetch(f"{url}/{kernel_id}", method="DELETE",
                                                 headers=auth)
        assert response.code == 204


async def execute(session: Session, kernel_id: str, code: str, timeout: float = 60) -> str:
    """Run `code` over the kernel websocket; return its stdout (fails on an error reply)."""
    url = session.handle.gateway_url.replace("http://", "ws://")
    request = HTTPRequest(f"{url}/api/kernels/{kernel_id}/channels",
                          headers={"Authorization": f"token {session.spec.gateway_token}"})
    ws = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    stdout, reply, idle = [], None, False
    end = time.monotonic() + timeout
    try:
        while reply is None or not idle:
            raw = await asyncio.wait_for(ws.read_message(), end - time.monotonic())
            assert raw is not None, "the kernel websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                stdout.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
    finally:
        ws.close()
    assert reply["status"] == "ok", reply
    return "".join(stdout)


HARDENING_PROBE = r"""
import json, os, socket
def can_write(path):
    try:
        with open(os.path.join(path, ".walnut-probe"), "w") as fh:
            fh.write("x")
        os.remove(os.path.join(path, ".walnut-probe"))
        return True
    except OSError:
        return False
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
def cgroup_memory():
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if os.path.exists(path):
            return open(path).read().strip()
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
    "root_writable": can_write("/"), "usr_writable": can_write("/usr"),
    "workspace_writable": can_write("/home/walnut/work"), "tmp_writable": can_write("/tmp"),
    "cwd": os.getcwd(),
    "cap_eff": status["CapEff"].strip(), "cap_prm": status["CapPrm"].strip(),
    "no_new_privs": status.get("NoNewPrivs", "").strip(),
    "docker_sock": any(os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock")),
    "memory_limit": cgroup_memory(),
    "token_in_env": any(k == "WALNUT_GATEWAY_TOKEN" for k in os.environ),
}))
"""


# --- tests --------------------------------------------------------------------------------


@pytest.mark.docker
def test_image_is_cached(engine: Engine) -> None:
    started = time.monotonic()
    assert image_mod.ensure_gateway_image(engine.client) == engine.image
    assert time.monotonic() - started < 5
    assert engine.image == image_mod.gateway_image_tag()
    config = engine.client.images.get(engine.image).attrs["Config"]
    assert config["User"] == "walnut"
    assert config["WorkingDir"] == "/home/walnut/work"
    assert "8888/tcp" in config["ExposedPorts"]
    assert "WALNUT_GATEWAY_IP=0.0.0.0" in config["Env"]


@pytest.mark.docker
def test_gateway_requires_its_token(session: Session) -> None:
    url = f"{session.handle.gateway_url}/api/kernelspecs"
    assert session.handle.gateway_url.startswith("http://127.0.0.1:")
    assert http_status(url, session.spec.gateway_token) == 200
    assert http_status(url, "wrong-" + session.spec.gateway_token) in (401, 403)
    assert http_status(url, None) in (401, 403)
    request = urllib.request.Request(url)
    request.add_header("Authorization", f"token {session.spec.gateway_token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        specs = json.loads(response.read())
    assert "python3" in specs["kernelspecs"]


@pytest.mark.docker
async def test_kernel_executes_over_websocket(session: Session) -> None:
    async with kernel(session) as kernel_id:
        assert await execute(session, kernel_id, "print(1+1)") == "2\n"
        assert await execute(session, kernel_id,
                             "import numpy; print(numpy.arange(4).sum())") == "6\n"


@pytest.mark.docker
async def test_wrong_token_cannot_open_kernel_websocket(session: Session) -> None:
    url = session.handle.gateway_url.replace("http://", "ws://")
    async with kernel(session) as kernel_id:
        request = HTTPRequest(f"{url}/api/kernels/{kernel_id}/channels",
                              headers={"Authorization": "token not-the-token"})
        with pytest.raises(HTTPClientError) as info:
            await websocket_connect(request)
        assert info.value.code in (401, 403)


@pytest.mark.docker
async def test_container_is_hardened_from_inside(session: Session) -> None:
    async with kernel(session) as kernel_id:
        probe = json.loads(await execute(session, kernel_id, HARDENING_PROBE))
    assert (probe["uid"], probe["gid"], probe["euid"]) == (1000, 1000, 1000)
    assert probe["root_writable"] is False
    assert probe["usr_writable"] is False
    assert probe["workspace_writable"] is True
    assert probe["tmp_writable"] is True
    assert probe["cwd"] == "/home/walnut/work"
    assert int(probe["cap_eff"], 16) == 0
    assert int(probe["cap_prm"], 16) == 0
    assert probe["no_new_privs"] == "1"
    assert probe["docker_sock"] is False
    assert probe["token_in_env"] is False
    assert int(probe["memory_limit"]) == MEMORY_MB * 2**20


@pytest.mark.docker
def test_limits_and_isolation_in_inspect(engine: Engine, session: Session) -> None:
    container = engine.client.containers.get(session.handle.ref)
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == int(CPUS * 1e9)
    assert host["Memory"] == MEMORY_MB * 2**20
    assert host["MemorySwap"] == MEMORY_MB * 2**20
    assert host["PidsLimit"] == PIDS
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert not host.get("DeviceRequests")
    assert container.attrs["Config"]["User"] == "1000:1000"
    bindings = host["PortBindings"]["8888/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    assert str(session.handle.gateway_url).endswith(
        ":" + container.attrs["NetworkSettings"]["Ports"]["8888/tcp"][0]["HostPort"])
    name = resource_name(session.spec.session_id)
    mounts = container.attrs["Mounts"]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts if m["Type"] == "volume"] \
        == [("volume", name, "/home/walnut/work")]
    assert not any("docker.sock" in (m.get("Source") or "") for m in mounts)
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [name]
    labels = container.labels
    assert labels["walnut.session"] == session.spec.session_id
    assert labels["walnut.provider"] == engine.provider_id
    assert labels["walnut.managed"] == "1"


@pytest.mark.docker
async def test_adopt_after_provider_restart(engine: Engine, session: Session) -> None:
    restarted = DockerRuntime(engine.client, engine.provider_id)
    adopted = await restarted.adopt()
    assert session.handle in adopted
    assert (await restarted.state(session.handle)).running
    other = DockerRuntime(engine.client, f"other-{uuid.uuid4().hex[:6]}")
    assert session.handle not in await other.adopt()
    assert http_status(f"{adopted[adopted.index(session.handle)].gateway_url}/api/kernelspecs",
                       session.spec.gateway_token) == 200


@pytest.mark.docker
async def test_stop_removes_container_network_and_volume(engine: Engine) -> None:
    runtime = DockerRuntime(engine.client, engine.provider_id)
    spec = make_spec(engine)
    handle = await runtime.start(spec)
    name = resource_name(spec.session_id)
    assert (await runtime.state(handle)).running
    assert engine.client.networks.list(names=[name])
    volume = engine.client.volumes.get(name)
    # the workspace is the session's own loop-mounted disk, and its egress chains are in place
    assert volume.attrs["Options"]["type"] == "ext4"
    assert volume.attrs["Options"]["device"].startswith("/dev/loop")
    assert runtime.disks.image(name).exists()
    assert set(egress.installed(spec.session_id)) == {"IN", "FWD"}

    await runtime.stop(handle)
    state = await runtime.state(handle)
    assert not state.running
    assert "gone" in state.reason
    assert not engine.client.containers.list(all=True, filters={"id": handle.ref})
    assert not [n for n in engine.client.networks.list(names=[name]) if n.name == name]
    assert not [v for v in engine.client.volumes.list(filters={"name": name}) if v.name == name]
    assert handle not in await runtime.adopt()
    assert not runtime.disks.image(name).exists()
    assert egress.installed(spec.session_id) == {}
    await runtime.stop(handle)  # idempotent


@pytest.mark.docker
async def test_state_explains_an_exited_gateway(engine: Engine) -> None:
    runtime = DockerRuntime(engine.client, engine.provider_id)
    spec = make_spec(engine, gateway_token="")  # the gateway refuses to start without one
    try:
        handle = await runtime.start(spec)
    except RuntimeError_ as exc:  # it may already be gone when the port is read back
        assert "exit code 1" in str(exc)
        assert "WALNUT_GATEWAY_TOKEN is required" in str(exc)
        return
    try:
        end = time.monotonic() + READY_DEADLINE
        state = await runtime.state(handle)
        while state.running and time.monotonic() < end:
            await asyncio.sleep(0.2)  # poll interval; the deadline decides
            state = await runtime.state(handle)
        assert not state.running
        assert "exit code 1" in state.reason
        assert "WALNUT_GATEWAY_TOKEN is required" in state.reason
        assert "WALNUT_GATEWAY_TOKEN is required" in await runtime.logs(handle)
    finally:
        await runtime.stop(handle)


@pytest.mark.docker
async def test_missing_image_is_a_clear_error_and_leaves_nothing(engine: Engine) -> None:
    runtime = DockerRuntime(engine.client, engine.provider_id)
    spec = make_spec(engine, image="walnut-gateway:does-not-exist")
    with pytest.raises(RuntimeError_, match="not on this provider"):
        await runtime.start(spec)
    name = resource_name(spec.session_id)
    assert not [n for n in engine.client.networks.list(names=[name]) if n.name == name]
    assert not engine.client.containers.list(all=True, filters={"name": name})


async def test_unreachable_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    import docker

    socket = f"unix://{tmp_path}/no-docker.sock"
    client = docker.DockerClient(base_url=socket, version="1.41", timeout=2)
    spec = SessionSpec("s1", "walnut-gateway:x", (), 1, 256, "t", tmp_path)
    runtime = DockerRuntime(client, "nobody")
    with pytest.raises(RuntimeError_, match="Docker engine is not reachable"):
        await runtime.start(spec)
    with pytest.raises(RuntimeError_, match="Docker engine is not reachable"):
        await runtime.adopt()
    monkeypatch.setenv("DOCKER_HOST", socket)  # the lazily made client fails the same way
    lazy = DockerRuntime(provider_id="nobody")
    with pytest.raises(RuntimeError_, match="Docker engine is not reachable"):
        await lazy.state(RuntimeHandle("s1", "", "abc"))
    await lazy.close()


def test_docker_available_reports_why_not(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    ok, reason = docker_available()
    assert ok is False
    assert "no Docker engine answers" in reason


def test_image_tag_covers_every_input(monkeypatch: pytest.MonkeyPatch) -> None:
    tag = image_mod.gateway_image_tag()
    assert tag.startswith("walnut-gateway:") and len(tag.split(":")[1]) == 12
    sources = image_mod._source_files()
    monkeypatch.setattr(image_mod, "_source_files", lambda: [*sources, ("extra.py", b"x")])
    changed_source = image_mod.gateway_image_tag()
    monkeypatch.undo()
    reqs = image_mod._requirements()
    monkeypatch.setattr(image_mod, "_requirements", lambda: [*reqs, "rich"])
    changed_reqs = image_mod.gateway_image_tag()
    monkeypatch.undo()
    monkeypatch.setattr(image_mod, "RECIPE_VERSION", image_mod.RECIPE_VERSION + "x")
    changed_recipe = image_mod.gateway_image_tag()
    assert len({tag, changed_source, changed_reqs, changed_recipe}) == 4


def test_debian_mirror_comes_from_apt_sources() -> None:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if not sources.is_file():
        pytest.skip("no /etc/apt/sources.list.d/debian.sources here")
    mirror = image_mod.debian_mirror()
    assert mirror in sources.read_text()
    assert not mirror.endswith("-security")


def test_gpus_are_requested_only_when_assigned() -> None:
    runtime = DockerRuntime(client=object(), provider_id="p")  # never contacted here
    spec = SessionSpec("s1", "img", (), 2, 512, "t", Path("/unused"))
    cpu_only = runtime._container_kwargs(spec, resource_name("s1"))
    assert "device_requests" not in cpu_only
    assert cpu_only["privileged"] is False
    assert all("docker.sock" not in str(key) for key in cpu_only["volumes"])
    with_gpus = runtime._container_kwargs(replace(spec, gpus=(0, 2)), resource_name("s1"))
    [request] = with_gpus["device_requests"]
    assert request["DeviceIDs"] == ["0", "2"]
    assert request["Capabilities"] == [["gpu"]]
    assert "CUDA_VISIBLE_DEVICES" not in with_gpus["environment"]  # the engine renumbers
    assert with_gpus["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0,2"
    # a CPU session sees no GPU even when the image says NVIDIA_VISIBLE_DEVICES=all
    assert cpu_only["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert cpu_only["environment"]["CUDA_VISIBLE_DEVICES"] == ""
    spoofed = replace(spec, env={"NVIDIA_VISIBLE_DEVICES": "all"})
    assert runtime._container_kwargs(spoofed, "x")["environment"]["NVIDIA_VISIBLE_DEVICES"] \
        == "void"


@pytest.mark.gpu
@pytest.mark.docker
async def test_assigned_gpu_is_visible_in_the_container(engine: Engine) -> None:
    if os.environ.get("WALNUT_GPU_TESTS") != "1":
        pytest.skip("set WALNUT_GPU_TESTS=1 on a provider with an NVIDIA GPU and its toolkit")
    runtime = DockerRuntime(engine.client, engine.provider_id)
    spec = make_spec(engine, gpus=(0,))
    handle = await runtime.start(spec)
    try:
        await asyncio.to_thread(wait_ready, handle, spec.gateway_token)
        session = Session(runtime, handle, spec)
        async with kernel(session) as kernel_id:
            out = await execute(session, kernel_id,
                                "import os; print(len(os.listdir('/proc/driver/nvidia/gpus')))")
        assert out == "1\n"
    finally:
        await runtime.stop(handle)
