"""The Sui ledger: everything short of a node for real; reads through pysui against a
stand-in Sui GraphQL service on loopback (tests/sui_standin.py), playing a chain where
anyone may publish look-alike structs; the rest against a live node only when
$WALNUT_SUI_RPC_URL names one (with $WALNUT_SUI_PACKAGE and $WALNUT_SUI_KEY)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

import pytest
from sui_standin import SuiStandIn

from jupyter_walnut.common.keys import KeyPair, verify
from jupyter_walnut.ledger import ABORT_CODES, LedgerError, Voucher, bcs
from jupyter_walnut.ledger.sui import (
    GasSplit,
    ObjectRef,
    Pure,
    SharedObject,
    SuiLedger,
    abort_from_error,
    build_transaction_data,
    decode_channel,
    decode_provider,
    plan_claim_and_close,
    plan_open,
    plan_register,
    sign_transaction,
    transaction_digest_to_sign,
)

SOURCES = Path(__file__).resolve().parent.parent / "contracts" / "sources"
CHANNEL = "0x" + "c4" * 32
PACKAGE = "0x" + "ab" * 32
KEY = KeyPair.from_seed(hashlib.sha256(b"sui ledger test").digest())
ZERO_RICH_PUBKEY = bytes([0, 1, 0, 2] * 8)


def snake(camel: str) -> str:
    return "E_" + re.sub(r"(?<!^)(?=[A-Z])", "_", camel[1:]).upper()


def test_move_abort_codes_match_python():
    found = {}
    for source in SOURCES.glob("*.move"):
        for name, code in re.findall(r"const (E\w+): u64 = (\d+);", source.read_text()):
            found[snake(name)] = int(code)
    assert found and all(ABORT_CODES[name] == code for name, code in found.items())
    onchain = {name for name, code in ABORT_CODES.items() if code < 100}
    assert onchain == set(found)


def move_struct_fields(module: str, struct: str) -> list[str]:
    text = (SOURCES / f"{module}.move").read_text()
    body = re.search(rf"public struct {struct} has key \{{(.*?)\n\}}", text, re.S).group(1)
    return re.findall(r"^\s*(\w+):", body, re.M)


def test_decoders_follow_the_move_struct_layout():
    assert move_struct_fields("channel", "Channel") == [
        "id", "renter", "provider", "voucher_pubkey", "funds", "deposited", "claimed",
        "refunded", "price_per_second_mist", "challenge_period_ms", "close_requested_at_ms",
        "closed",
    ]  # fmt: skip
    assert move_struct_fields("registry", "ProviderEntry") == [
        "id", "owner", "endpoint", "tls_fingerprint", "specs", "price_per_second_mist", "active",
    ]  # fmt: skip


def test_decode_channel_contents():
    renter, provider = "0x" + "01" * 32, "0x" + "02" * 32
    contents = (
        bcs.address(CHANNEL) + bcs.address(renter) + bcs.address(provider)
        + bcs.byte_vector(ZERO_RICH_PUBKEY)
        + bcs.u64(600)  # funds
        + bcs.u64(1000) + bcs.u64(400) + bcs.u64(0) + bcs.u64(25) + bcs.u64(60_000)
        + bcs.uleb128(1) + bcs.u64(123_456)  # Option::some
        + b"\x00"
    )  # fmt: skip
    channel = decode_channel(contents)
    assert (channel.channel_id, channel.renter, channel.provider) == (CHANNEL, renter, provider)
    assert channel.voucher_pubkey == ZERO_RICH_PUBKEY
    assert (channel.deposited, channel.claimed, channel.locked) == (1000, 400, 600)
    assert channel.close_requested_at_ms == 123_456 and channel.status == "closing"
    with pytest.raises(ValueError, match="truncated"):
        decode_channel(contents[:-2])


def test_decode_provider_contents():
    contents = (
        bcs.address("0x" + "0e" * 32) + bcs.address(KEY.address) + bcs.string("https://p:1")
        + bcs.byte_vector(bytes(32)) + bcs.string('{"gpus": 8}') + bcs.u64(7) + b"\x01"
    )  # fmt: skip
    entry = decode_provider(contents)
    assert entry.owner == KEY.address and entry.endpoint == "https://p:1"
    assert entry.tls_fingerprint == "00" * 32 and entry.specs == '{"gpus": 8}'
    assert entry.price_per_second_mist == 7 and entry.active


def test_plans_carry_exact_bcs_arguments():
    (call,) = plan_open(KEY.address, ZERO_RICH_PUBKEY, 5000, 3, 60_000)
    assert (call.module, call.function) == ("channel", "open")
    assert call.arguments[0] == GasSplit(5000)
    assert call.arguments[2] == Pure(bytes([32]) + ZERO_RICH_PUBKEY)  # zeros kept
    assert call.arguments[4] == Pure((60_000).to_bytes(8, "little"))
    claim, close = plan_claim_and_close(CHANNEL, 7, bytes(64))
    assert claim.arguments[0] == SharedObject(CHANNEL) and close.function == "provider_close"
    (register,) = plan_register("https://p", bytes(32), "{}", 1)
    assert register.arguments[0] == Pure(b"\x09https://p")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (
            'MoveAbort(MoveLocation { module: ModuleId { address: ab, name: Identifier("channel")'
            ' }, function: 3, instruction: 29, function_name: Some("settle") }, 4) in command 0',
            "E_STALE_VOUCHER",
        ),
        ("Transaction failed: abort_code: 3, module channel", "E_BAD_SIGNATURE"),
        ("MoveAbort(MoveLocation { module: x }, 999) in command 0", "E_NODE"),
        ("connection refused", "E_NODE"),
    ],
)
def test_aborts_map_to_the_local_ledger_errors(text, code):
    assert abort_from_error(text).code == code


def test_offline_transaction_builds_decodes_and_signs():
    sbcs = pytest.importorskip("pysui.sui.sui_bcs.bcs")
    voucher = Voucher.sign(KEY, CHANNEL, 2**40)
    signature = voucher.signature[:8] + bytes(8) + voucher.signature[16:]  # force zero bytes
    gas = ObjectRef("0x" + "99" * 32, 17, "1" * 32)  # base58 of 32 zero bytes
    tx_bytes = build_transaction_data(
        package_id=PACKAGE,
        calls=plan_claim_and_close(CHANNEL, voucher.amount_mist, signature),
        sender=KEY.address,
        gas_coin=gas,
        gas_price=1000,
        shared_versions={CHANNEL: 42},
    )
    data = sbcs.TransactionData.deserialize(tx_bytes).value
    assert data.Sender.to_address_str() == KEY.address
    assert data.GasData.Price == 1000 and data.GasData.Payment[0].SequenceNumber == 17
    program = data.TransactionKind.value
    pures = [bytes(i.value) for i in program.Inputs if i.enum_name == "Pure"]
    assert bcs.u64(2**40) in pures and bcs.byte_vector(signature) in pures
    shared = [i.value.value for i in program.Inputs if i.enum_name == "Object"]
    assert shared[0].ObjectID.to_address_str() == CHANNEL and shared[0].SequenceNumber == 42
    functions = [c.value.Function for c in program.Command]
    assert functions == ["claim", "provider_close"]

    sig = base64.b64decode(sign_transaction(KEY, tx_bytes))
    assert sig[0] == 0 and sig[65:] == KEY.public_key
    assert verify(KEY.public_key, sig[1:65], transaction_digest_to_sign(tx_bytes))
    crypto = pytest.importorskip("pysui.sui.sui_crypto")
    theirs = crypto.keypair_from_keystring(KEY.to_bech32())
    tx_b64 = base64.b64encode(tx_bytes).decode()
    assert base64.b64decode(theirs.new_sign_secure(tx_b64))[1:65] == sig[1:65]


def test_missing_shared_version_is_an_error():
    pytest.importorskip("pysui")
    with pytest.raises(ValueError, match="initial shared version"):
        build_transaction_data(
            package_id=PACKAGE, calls=plan_claim_and_close(CHANNEL, 1, bytes(64)),
            sender=KEY.address, gas_coin=ObjectRef("0x1", 1, "1" * 32), gas_price=1,
            shared_versions={},
        )  # fmt: skip


# --- reads through pysui against the stand-in node --------------------------------------

EVIL = "0x" + "ee" * 32  # another package, free to declare its own `channel::Channel`
RENTER, PROVIDER = "0x" + "01" * 32, "0x" + "02" * 32
CHANNEL_TYPE = f"{PACKAGE}::channel::Channel"
ENTRY_TYPE = f"{PACKAGE}::registry::ProviderEntry"
REGISTERED = f"{PACKAGE}::registry::ProviderRegistered"
LOOKALIKE_CHANNEL_TYPES = [
    f"{EVIL}::channel::Channel",
    "0xevil::channel::Channel",
    f"{PACKAGE}::other::Channel",
    f"{PACKAGE}::channel::Channel<0x2::sui::SUI>",
]


def channel_bcs(channel_id: str, *, funds: int, deposited: int, claimed: int = 0) -> bytes:
    return (
        bcs.address(channel_id) + bcs.address(RENTER) + bcs.address(PROVIDER)
        + bcs.byte_vector(ZERO_RICH_PUBKEY) + bcs.u64(funds) + bcs.u64(deposited)
        + bcs.u64(claimed) + bcs.u64(0) + bcs.u64(25) + bcs.u64(60_000) + bcs.uleb128(0)
        + b"\x00"
    )  # fmt: skip


def entry_bcs(provider_id: str, endpoint: str) -> bytes:
    return (
        bcs.address(provider_id) + bcs.address(PROVIDER) + bcs.string(endpoint)
        + bcs.byte_vector(bytes(32)) + bcs.string("{}") + bcs.u64(7) + b"\x01"
    )  # fmt: skip


def register(node: SuiStandIn, index: int, move_type: str = ENTRY_TYPE) -> str:
    """A provider entry on the stand-in chain and the event that announces it."""
    provider_id = "0x" + f"{index + 1:064x}"
    node.put_object(provider_id, move_type, entry_bcs(provider_id, f"https://p{index}:8765"))
    node.emit(REGISTERED, {"provider_id": provider_id, "owner": PROVIDER})
    return provider_id


@pytest.fixture(scope="module")
def node():
    standin = SuiStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def sui(node):
    node.objects.clear()
    node.events.clear()
    node.event_queries = 0
    with SuiLedger(node.url, PACKAGE, key=KEY) as ledger:
        yield ledger


def test_channel_of_the_package_is_read(sui, node):
    node.put_object(CHANNEL, CHANNEL_TYPE, channel_bcs(CHANNEL, funds=600, deposited=1000,
                                                       claimed=400))  # fmt: skip
    channel = sui.get_channel(CHANNEL)
    assert (channel.renter, channel.provider, channel.voucher_pubkey) == (
        RENTER, PROVIDER, ZERO_RICH_PUBKEY
    )  # fmt: skip
    assert (channel.deposited, channel.claimed, channel.locked) == (1000, 400, 600)
    assert channel.status == "open"


@pytest.mark.parametrize("move_type", LOOKALIKE_CHANNEL_TYPES)
def test_lookalike_channel_of_another_type_is_refused(sui, node, move_type):
    node.put_object(CHANNEL, move_type, channel_bcs(CHANNEL, funds=10**12, deposited=10**12))
    with pytest.raises(LedgerError) as refused:
        sui.get_channel(CHANNEL)
    assert refused.value.code == "E_UNKNOWN_CHANNEL" and CHANNEL_TYPE in refused.value.message
    # a provider claiming from it is refused before anything is signed or sent
    with pytest.raises(LedgerError, match="E_UNKNOWN_CHANNEL"):
        sui.claim(KEY, CHANNEL, 5, bytes(64))


def test_locked_amount_is_the_channel_balance_not_its_counters(sui, node):
    # the counters claim a million MIST was deposited; the Balance<SUI> holds 250
    contents = channel_bcs(CHANNEL, funds=250, deposited=1_000_000, claimed=100)
    node.put_object(CHANNEL, CHANNEL_TYPE, contents)
    channel = sui.get_channel(CHANNEL)
    assert channel.locked == 250
    assert (channel.deposited, channel.claimed) == (350, 100)


def test_unknown_channel_is_a_clear_error(sui):
    with pytest.raises(LedgerError) as refused:
        sui.get_channel(CHANNEL)
    assert refused.value.code == "E_UNKNOWN_CHANNEL"


def test_registry_pages_through_every_provider_event(sui, node):
    registered = [register(node, i) for i in range(120)]
    listed = sui.list_providers()
    assert [entry.provider_id for entry in listed] == registered
    assert listed[119].endpoint == "https://p119:8765"
    assert node.event_queries == 3  # 50 + 50 + 20


def test_provider_entry_of_another_type_is_ignored(sui, node):
    honest = register(node, 0)
    lookalike = register(node, 1, move_type=f"{EVIL}::registry::ProviderEntry")
    assert [entry.provider_id for entry in sui.list_providers()] == [honest]
    with pytest.raises(LedgerError) as refused:
        sui.get_provider(lookalike)
    assert refused.value.code == "E_UNKNOWN_PROVIDER"
    assert sui.get_provider(honest).endpoint == "https://p0:8765"


def test_balance_is_read_from_the_node(sui, node):
    node.balances[RENTER] = 7 * 10**9
    assert sui.balance(RENTER) == 7 * 10**9


def test_ledger_signs_only_with_a_key_it_holds(sui, node):
    node.put_object(CHANNEL, CHANNEL_TYPE, channel_bcs(CHANNEL, funds=600, deposited=600))
    with pytest.raises(LedgerError) as refused:
        sui.claim(PROVIDER, CHANNEL, 5, bytes(64))  # an address whose key it lacks
    assert refused.value.code == "E_INVALID_ARGUMENT"


def test_constructor_refuses_what_it_cannot_use():
    with pytest.raises(LedgerError, match="E_INVALID_ARGUMENT"):
        SuiLedger("http://127.0.0.1:9/graphql", "not-an-id")
    with pytest.raises(LedgerError, match="E_INVALID_ARGUMENT"):
        SuiLedger("file:///etc/passwd", PACKAGE)



def test_a_node_that_does_not_answer_fails_the_first_call_naming_it():
    # construction does not connect: a process configured for Sui starts without its node
    with SuiLedger("http://127.0.0.1:9/graphql", PACKAGE) as ledger:  # nothing listens there
        for _ in range(2):  # and keeps saying so, instead of caching a broken client
            with pytest.raises(LedgerError) as refused:
                ledger.balance(RENTER)
            assert refused.value.code == "E_NODE"
            assert "http://127.0.0.1:9/graphql" in refused.value.message
            assert "\n" not in refused.value.message


# --- live: only with a node ---------------------------------------------------------

live = pytest.mark.skipif(
    not os.environ.get("WALNUT_SUI_RPC_URL"), reason="no Sui node: set WALNUT_SUI_RPC_URL"
)


@live
def test_live_channel_round_trip():
    renter = KeyPair.from_bech32(os.environ["WALNUT_SUI_KEY"])
    provider = KeyPair.from_bech32(os.environ.get("WALNUT_SUI_PROVIDER_KEY", renter.to_bech32()))
    vkey = KeyPair.generate()
    ledger = SuiLedger(os.environ["WALNUT_SUI_RPC_URL"], os.environ["WALNUT_SUI_PACKAGE"])
    try:
        channel = ledger.open_channel(renter, provider.address, vkey.public_key, 1000, 1, 0)
        assert channel.deposited == 1000 and channel.status == "open"
        voucher = Voucher.sign(vkey, channel.channel_id, 400)
        assert ledger.claim(provider, channel.channel_id, 400, voucher.signature) == 400
        with pytest.raises(Exception, match="E_STALE_VOUCHER"):
            ledger.claim(provider, channel.channel_id, 400, voucher.signature)
        closed = ledger.provider_close(provider, channel.channel_id)
        assert (closed.claimed, closed.refunded) == (400, 600)
    finally:
        ledger.close()
