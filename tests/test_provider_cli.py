"""`walnut-provider` as a user runs it: init, serve, status, restart with adoption."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import open_channel
from kernel_ws import KernelWS

from jupyter_walnut.common.tls import fingerprint
from jupyter_walnut.renter.provider_client import ProviderAPIError, ProviderClient

CLI = [sys.executable, "-m", "jupyter_walnut.provider.cli"]


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "WALNUT_LEDGER": str(tmp_path / "ledger.sqlite")}


def test_init_creates_identity_and_refuses_to_overwrite(tmp_path, env):
    home = tmp_path / "prov"
    done = run("--home", str(home), "init", "--name", "my-node", env=env)
    assert done.returncode == 0, done.stderr
    assert "Provider identity: 0x" in done.stdout
    key = home / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("suiprivkey1")
    assert 'name = "my-node"' in (home / "provider.toml").read_text()
    before = key.read_text()
    again = run("--home", str(home), "init", env=env)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "refusing to overwrite" in again.stderr
    assert key.read_text() == before


def test_invalid_config_is_refused_with_the_key_named(tmp_path, env):
    home = tmp_path / "prov"
    assert run("--home", str(home), "init", env=env).returncode == 0
    config = home / "provider.toml"
    config.write_text(config.read_text().replace("price_per_second_mist = 2000",
                                                 "price_per_second_mist = 0.5"))
    done = run("--home", str(home), "serve", env=env)
    assert done.returncode == 2
    assert "shapes[0].price_per_second_mist: must be an integer (MIST)" in done.stderr
    config.write_text("[provider\n")
    done = run("--home", str(home), "serve", env=env)
    assert done.returncode == 2 and "not valid TOML" in done.stderr


def start_serve(home: Path, env: dict, port_file: Path) -> subprocess.Popen:
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([*CLI, "--home", str(home), "serve", "--port", "0", "--runtime",
                             "process", "--port-file", str(port_file)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("provider did not start")
        time.sleep(0.05)  # polling a subprocess's port file, bounded by the deadline
    return proc


@pytest.mark.asyncio
async def test_serve_status_and_restart_adopts_sessions(tmp_path, env, renter_key):
    from jupyter_walnut.common.keys import KeyPair
    from jupyter_walnut.ledger import LocalLedger

    home = tmp_path / "prov"
    assert run("--home", str(home), "init", "--name", "cli-node", env=env).returncode == 0
    port_file = tmp_path / "port"
    proc = start_serve(home, env, port_file)
    try:
        fp = fingerprint((home / "tls" / "cert.pem").read_bytes())
        url = f"https://127.0.0.1:{port_file.read_text()}"
        status = run("--home", str(home), "status", "--url", url, env=env)
        assert status.returncode == 0, status.stderr
        assert "cli-node" in status.stdout and "cpu-small" in status.stdout
        assert "SUI/h" in status.stdout and f"sha256={fp}" in status.stdout
        url = f"{url}#sha256={fp}"  # the renter pins the provider's certificate

        identity = KeyPair.load(home / "identity.key")
        ledger = LocalLedger(env["WALNUT_LEDGER"])
        node = type("Node", (), {"identity": identity})
        client = ProviderClient(url, renter_key)
        created = await client.create_session(
            image="python", shape="cpu-small",
            channel_id=open_channel(ledger, renter_key, node, price=2000, deposit=2000 * 600))
        sid, token = created["id"], created["access_token"]
        await client.wait_running(sid)
        kernel = await client.gateway(sid, token, "POST", "api/kernels", {})
        ws = KernelWS(await client.kernel_websocket(sid, token, kernel["id"]))
        await ws.execute("x = 41")
        ws.conn.close()

        # a crash: the provider dies without any cleanup
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = start_serve(home, env, port_file)
        url = f"https://127.0.0.1:{port_file.read_text()}#sha256={fp}"
        client = ProviderClient(url, renter_key)
        assert (await client.get_session(sid))["status"] == "running"
        ws = KernelWS(await client.kernel_websocket(sid, token, kernel["id"]))
        assert (await ws.execute("print(x + 1)")).stdout == "42\n"
        ws.conn.close()
        await client.stop_session(sid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def test_status_of_a_node_that_is_down(tmp_path, env):
    home = tmp_path / "prov"
    assert run("--home", str(home), "init", env=env).returncode == 0
    done = run("--home", str(home), "status", "--url", "http://127.0.0.1:1", env=env)
    assert done.returncode == 1 and "not answering" in done.stderr


@pytest.mark.asyncio
async def test_tls_by_default_and_pinning_refuses_impostors(tmp_path, env, renter_key):
    home = tmp_path / "prov"
    assert run("--home", str(home), "init", env=env).returncode == 0
    port_file = tmp_path / "port"
    proc = start_serve(home, env, port_file)
    try:
        port = port_file.read_text()
        fp = fingerprint((home / "tls" / "cert.pem").read_bytes())
        ok = await ProviderClient(f"https://127.0.0.1:{port}#sha256={fp}", renter_key).status()
        assert ok["tls_fingerprint"] == fp
        for url, words in [
            (f"https://127.0.0.1:{port}#sha256={'0' * 64}", "not the pinned"),
            (f"https://127.0.0.1:{port}", "no pinned certificate"),
            (f"http://127.0.0.1:{port}", "unreachable"),  # it speaks only TLS
            ("http://192.0.2.1:8765", "refusing plain HTTP"),  # never plain off loopback
        ]:
            with pytest.raises(ProviderAPIError) as err:
                await ProviderClient(url, renter_key).status()
            assert words in err.value.message, url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_plain_http_only_on_loopback(tmp_path, env):
    home = tmp_path / "prov"
    assert run("--home", str(home), "init", env=env).returncode == 0
    config = home / "provider.toml"
    config.write_text(config.read_text().replace('listen_host = "127.0.0.1"',
                                                 'listen_host = "0.0.0.0"')
                      .replace('mode = "self-signed"', 'mode = "off"'))
    done = run("--home", str(home), "serve", env=env)
    assert done.returncode == 2 and "tls.mode" in done.stderr
