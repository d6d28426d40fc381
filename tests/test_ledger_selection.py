"""Choosing the Sui ledger by configuration: a renter's Jupyter Server with
`WalnutApp.ledger_class = "sui"` and a provider with `[ledger] kind = "sui"` (the node and
the walnut-provider CLI) settle through SuiLedger against the stand-in Sui GraphQL service
(tests/sui_standin.py); pointed at a URL where no node answers, they start, and the first
ledger call fails with one line naming that URL (HTTP 503, CLI exit code 1), nothing moved.
Live: the same configuration against $WALNUT_SUI_RPC_URL."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import provider_config
from stack import StackNode
from sui_standin import SuiStandIn
from test_provider_cli import run, start_serve
from tornado.httpclient import HTTPClientError

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.tls import fingerprint
from jupyter_walnut.ledger import LocalLedger, bcs
from jupyter_walnut.ledger.sui import SuiLedger
from jupyter_walnut.renter.provider_client import ProviderAPIError, ProviderClient

PACKAGE = "0x" + "ab" * 32
CHANNEL = "0x" + "c4" * 32
DEAD_URL = "http://127.0.0.1:9/graphql"  # the discard port: nothing listens there
LIVE_URL = os.environ.get("WALNUT_SUI_RPC_URL")
LIVE_KEY = os.environ.get("WALNUT_SUI_KEY")
live = pytest.mark.skipif(
    not (LIVE_URL and LIVE_KEY and os.environ.get("WALNUT_SUI_PACKAGE")),
    reason="no Sui node: set WALNUT_SUI_RPC_URL (with WALNUT_SUI_PACKAGE and WALNUT_SUI_KEY)",
)


@pytest.fixture(scope="module")
def standin():
    node = SuiStandIn().start()
    yield node
    node.stop()


@pytest.fixture
def chain(standin):
    """The stand-in chain, emptied for the test."""
    standin.objects.clear()
    standin.events.clear()
    standin.balances.clear()
    return standin


def channel_bcs(channel_id: str, renter: KeyPair, provider: str, funds: int) -> bytes:
    """A `walnut::channel::Channel` as the Move package lays it out (open, unclaimed)."""
    return (
        bcs.address(channel_id) + bcs.address(renter.address) + bcs.address(provider)
        + bcs.byte_vector(renter.public_key) + bcs.u64(funds) + bcs.u64(funds) + bcs.u64(0)
        + bcs.u64(0) + bcs.u64(1000) + bcs.u64(600_000) + bcs.uleb128(0) + b"\x00"
    )  # fmt: skip


def register(chain: SuiStandIn, endpoint: str) -> str:
    provider_id = "0x" + "0e" * 32
    contents = (
        bcs.address(provider_id) + bcs.address(KeyPair.generate().address)
        + bcs.string(endpoint) + bcs.byte_vector(bytes(range(32))) + bcs.string("{}")
        + bcs.u64(7) + b"\x01"
    )  # fmt: skip
    chain.put_object(provider_id, f"{PACKAGE}::registry::ProviderEntry", contents)
    chain.emit(f"{PACKAGE}::registry::ProviderRegistered", {"provider_id": provider_id})
    return provider_id


# --- the renter's Jupyter Server ----------------------------------------------------------


@pytest.fixture
def wallet() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture
def rpc_url(chain) -> str:
    return chain.url


@pytest.fixture
def package_id() -> str:
    return PACKAGE


@pytest.fixture
def providers(request) -> list[str]:
    """None by default; `local` (indirect parametrize): the module's local-ledger provider."""
    if getattr(request, "param", None) == "local":
        return [request.getfixturevalue("local_provider").pinned_url]
    return []


@pytest.fixture
def jp_server_config(tmp_path, wallet, rpc_url, package_id, providers):
    home = tmp_path / "renter"
    wallet.save(home / "wallet.key")
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
        "WalnutApp": {"providers": providers, "walnut_home": str(home), "ledger_class": "sui",
                      "sui_rpc_url": rpc_url, "sui_package_id": package_id,
                      "challenge_period": 60, "poll_interval": 0.5},
    }


async def fetch_json(jp_fetch, *path: str, **kwargs) -> tuple[int, dict]:
    try:
        resp = await jp_fetch(*path, **kwargs)
    except HTTPClientError as exc:
        return exc.code, json.loads(exc.response.body)
    return resp.code, json.loads(resp.body)


async def test_renter_configured_for_sui_reads_its_wallet_and_registry_there(
        jp_fetch, chain, wallet):
    chain.balances[wallet.address] = 7 * 10**9 + 1
    register(chain, "https://127.0.0.1:1")  # registered, but nothing answers there
    status, body = await fetch_json(jp_fetch, "walnut", "wallet")
    assert status == 200, body
    assert (body["network"], body["address"], body["balance_mist"]) == (
        "sui", wallet.address, 7 * 10**9 + 1)
    # the registry is read through the Sui ledger too, pinned by the registered fingerprint
    status, body = await fetch_json(jp_fetch, "walnut", "offers")
    assert status == 200, body
    assert [row["provider_url"] for row in body["offers"]] == [
        "https://127.0.0.1:1#sha256=" + bytes(range(32)).hex()]
    assert body["offers"][0]["healthy"] is False


@pytest.mark.parametrize("rpc_url", [DEAD_URL])
async def test_renter_without_a_sui_node_starts_and_answers_503_naming_it(jp_fetch):
    status, body = await fetch_json(jp_fetch, "walnut", "wallet")
    assert status == 503, body
    assert DEAD_URL in body["message"] and "\n" not in body["message"]
    status, body = await fetch_json(jp_fetch, "walnut", "status")  # the rest still works
    assert status == 200 and body["active_sessions"] == 0


@pytest.fixture(scope="module")
def local_provider(tmp_path_factory):
    """A provider node of the default stack that settles on its own local ledger."""
    root = tmp_path_factory.mktemp("local-provider")
    with LocalLedger(root / "ledger.sqlite") as ledger:
        node = StackNode(root, ledger)
        yield node
        node.stop()


@pytest.mark.parametrize("providers", ["local"], indirect=True)
@pytest.mark.parametrize("rpc_url", [DEAD_URL])
async def test_a_launch_without_a_sui_node_fails_before_anything_moves(
        jp_fetch, local_provider, wallet):
    status, body = await fetch_json(jp_fetch, "walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": local_provider.pinned_url, "shape": "cpu-small",
         "budget_mist": 600_000}))
    assert status == 503, body
    assert DEAD_URL in body["message"]
    # nothing moved: the provider holds no session of this renter, the renter none either
    assert local_provider.run(local_provider.client(wallet).list_sessions()) == []
    assert (await fetch_json(jp_fetch, "walnut", "sessions"))[1]["sessions"] == []


@pytest.fixture
def live_key_file(tmp_path) -> Path:
    path = tmp_path / "sui.key"
    KeyPair.from_bech32(LIVE_KEY).save(path)
    return path


@live
@pytest.mark.parametrize("rpc_url", [LIVE_URL])
@pytest.mark.parametrize("package_id", [os.environ.get("WALNUT_SUI_PACKAGE")])
@pytest.mark.parametrize("wallet", [KeyPair.from_bech32(LIVE_KEY)] if LIVE_KEY else [None])
async def test_live_renter_configured_for_sui_reads_the_node(jp_fetch, wallet, package_id):
    status, body = await fetch_json(jp_fetch, "walnut", "wallet")
    assert status == 200, body
    assert (body["network"], body["address"]) == ("sui", wallet.address)
    with SuiLedger(LIVE_URL, package_id) as ledger:
        assert body["balance_mist"] == ledger.balance(wallet.address)


# --- the provider ------------------------------------------------------------------------


def sui_provider_config(rpc_url: str):
    return provider_config(ledger={"kind": "sui", "rpc_url": rpc_url, "package_id": PACKAGE})


def test_provider_configured_for_sui_admits_sessions_by_its_channels(tmp_path, chain):
    renter = KeyPair.generate()
    node = StackNode(tmp_path, None, config=sui_provider_config(chain.url))  # ledger: config
    try:
        client = node.client(renter)
        assert node.run(client.status())["settlement"]["ledger"] == "sui"
        with pytest.raises(ProviderAPIError) as refused:  # no such channel on the chain
            node.run(client.create_session(image="python", shape="cpu-small",
                                           channel_id=CHANNEL))
        assert refused.value.status == 402
        assert f"{PACKAGE}::channel::Channel" in refused.value.message
        # a channel on the chain that pays another provider is read and refused as such
        chain.put_object(CHANNEL, f"{PACKAGE}::channel::Channel",
                         channel_bcs(CHANNEL, renter, KeyPair.generate().address, 10**9))
        with pytest.raises(ProviderAPIError) as refused:
            node.run(client.create_session(image="python", shape="cpu-small",
                                           channel_id=CHANNEL))
        assert refused.value.status == 402 and "another provider" in refused.value.message
        assert node.run(client.list_sessions()) == []
    finally:
        node.stop()


def test_provider_without_a_sui_node_starts_and_answers_503_naming_it(tmp_path):
    renter = KeyPair.generate()
    node = StackNode(tmp_path, None, config=sui_provider_config(DEAD_URL))
    try:
        client = node.client(renter)
        with pytest.raises(ProviderAPIError) as refused:
            node.run(client.create_session(image="python", shape="cpu-small",
                                           channel_id=CHANNEL))
        assert refused.value.status == 503
        assert DEAD_URL in refused.value.message and "\n" not in refused.value.message
        assert node.run(client.list_sessions()) == []  # nothing admitted, nothing started
    finally:
        node.stop()


def sui_home(tmp_path: Path, rpc_url: str) -> Path:
    """`walnut-provider init`'s home with its [ledger] table set to Sui at `rpc_url`."""
    home = tmp_path / "prov"
    done = run("--home", str(home), "init", "--name", "sui-node",
               env={**os.environ, "WALNUT_LEDGER": str(tmp_path / "unused.sqlite")})
    assert done.returncode == 0, done.stderr
    config = home / "provider.toml"
    kept, in_ledger = [], False
    for line in config.read_text().splitlines():
        if line.startswith("["):
            in_ledger = line.strip() == "[ledger]"
        if not in_ledger:
            kept.append(line)
    kept += ["[ledger]", 'kind = "sui"', f'rpc_url = "{rpc_url}"', f'package_id = "{PACKAGE}"']
    config.write_text("\n".join(kept) + "\n")
    return home


def claim(home: Path) -> tuple[int, list[str]]:
    done = run("claim", "--home", str(home), "--channel", CHANNEL, "--amount-mist", "5",
               "--signature", "00" * 64, env={k: v for k, v in os.environ.items()
                                             if k != "WALNUT_LEDGER"})
    return done.returncode, done.stderr.strip().splitlines()


def test_provider_cli_claims_on_the_configured_sui_ledger(tmp_path, chain):
    code, lines = claim(sui_home(tmp_path, chain.url))
    assert code == 1 and len(lines) == 1, lines
    assert "E_UNKNOWN_CHANNEL" in lines[0] and f"{PACKAGE}::channel::Channel" in lines[0]


def test_provider_cli_without_a_sui_node_is_one_line_naming_it(tmp_path):
    home = sui_home(tmp_path, DEAD_URL)
    code, lines = claim(home)
    assert code == 1 and len(lines) == 1, lines
    assert "E_NODE" in lines[0] and DEAD_URL in lines[0]


@pytest.mark.asyncio
async def test_provider_serve_without_a_sui_node_starts_and_answers_503(tmp_path):
    home = sui_home(tmp_path, DEAD_URL)
    env = {**os.environ, "WALNUT_LEDGER": str(tmp_path / "unused.sqlite")}
    proc = start_serve(home, env, tmp_path / "port")
    try:
        fp = fingerprint((home / "tls" / "cert.pem").read_bytes())
        url = f"https://127.0.0.1:{(tmp_path / 'port').read_text()}#sha256={fp}"
        client = ProviderClient(url, KeyPair.generate())
        assert (await client.status())["settlement"]["ledger"] == "sui"
        with pytest.raises(ProviderAPIError) as refused:
            await client.create_session(image="python", shape="cpu-small", channel_id=CHANNEL)
        assert refused.value.status == 503 and DEAD_URL in refused.value.message
        assert await client.list_sessions() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


@live
def test_live_provider_cli_reads_the_configured_node(tmp_path, live_key_file):
    home = sui_home(tmp_path, LIVE_URL)
    config = home / "provider.toml"
    config.write_text(config.read_text().replace(
        f'package_id = "{PACKAGE}"',
        f'package_id = "{os.environ["WALNUT_SUI_PACKAGE"]}"\nkey = "{live_key_file}"'))
    code, lines = claim(home)  # an unknown channel, read from the live node
    assert code == 1 and len(lines) == 1 and "E_UNKNOWN_CHANNEL" in lines[0], lines



@live
def test_live_provider_node_reads_channels_from_the_configured_node(tmp_path):
    config = provider_config(ledger={"kind": "sui", "rpc_url": LIVE_URL,
                                     "package_id": os.environ.get("WALNUT_SUI_PACKAGE")})
    node = StackNode(tmp_path, None, config=config)
    try:
        client = node.client(KeyPair.generate())
        with pytest.raises(ProviderAPIError) as refused:  # read from the live node: none
            node.run(client.create_session(image="python", shape="cpu-small",
                                           channel_id=CHANNEL))
        assert refused.value.status == 402 and "::channel::Channel" in refused.value.message
    finally:
        node.stop()
