"""Voucher bytes and signatures, against the vectors the Move tests use too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import bcs, vectors
from jupyter_walnut.ledger.vouchers import (
    DOMAIN,
    MESSAGE_LENGTH,
    Voucher,
    parse_voucher_message,
    verify_voucher,
    voucher_message,
)

CONTRACTS = Path(__file__).resolve().parent.parent / "contracts"
VECTORS = json.loads((CONTRACTS / "test_vectors.json").read_text())
KEY = KeyPair.from_seed(bytes(range(32)))
u64s = st.integers(min_value=0, max_value=bcs.U64_MAX)
channel_ids = st.binary(min_size=32, max_size=32)


def test_layout_is_domain_channel_amount():
    channel = "0x" + "11" * 32
    msg = voucher_message(channel, 0x0102030405060708)
    assert len(msg) == MESSAGE_LENGTH == 57
    assert msg[:17] == b"walnut-voucher-v1" == DOMAIN
    assert msg[17:49] == bytes([0x11]) * 32
    assert msg[49:] == bytes([8, 7, 6, 5, 4, 3, 2, 1])  # BCS u64 is little-endian


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vectors(case):
    amount = int(case["amount_mist"])
    assert voucher_message(case["channel_id"], amount).hex() == case["message"]
    key = KeyPair.from_bech32(case["secret_key"])
    assert key.public_key.hex() == case["public_key"]
    assert key.address == case["address"]
    assert key.sign(bytes.fromhex(case["message"])).hex() == case["signature"]
    pk, sig = bytes.fromhex(case["public_key"]), bytes.fromhex(case["signature"])
    assert verify_voucher(pk, case["channel_id"], amount, sig)


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors(case):
    amount = int(case["amount_mist"])
    assert voucher_message(case["channel_id"], amount).hex() == case["message"]
    pk, sig = bytes.fromhex(case["public_key"]), bytes.fromhex(case["signature"])
    assert not verify_voucher(pk, case["channel_id"], amount, sig)


def test_vector_files_are_current():
    """The JSON and the generated Move test module both match the generator."""
    built = vectors.build()
    assert built == VECTORS
    assert (CONTRACTS / vectors.MOVE_NAME).read_text() == vectors.render_move(built)


def test_move_channel_tests_use_vector_bytes():
    text = (CONTRACTS / "tests" / "channel_tests.move").read_text()
    known = json.dumps(VECTORS)
    literals = re.findall(r'x"([0-9a-f]{64,})"', text)
    assert literals and all(lit in known for lit in literals)


def test_move_voucher_module_uses_the_same_domain():
    text = (CONTRACTS / "sources" / "voucher.move").read_text()
    assert f'b"{DOMAIN.decode()}"' in text


@given(channel_ids, u64s)
def test_message_round_trips(channel, amount):
    assert parse_voucher_message(voucher_message(channel, amount)) == (
        bcs.format_address(channel),
        amount,
    )


@given(channel_ids, u64s, st.data())
def test_any_change_breaks_the_signature(channel, amount, data):
    voucher = Voucher.sign(KEY, channel, amount)
    assert voucher.verify(KEY.public_key)
    other_amount = data.draw(u64s.filter(lambda a: a != amount))
    other_channel = data.draw(channel_ids.filter(lambda c: c != channel))
    sig = voucher.signature
    assert not verify_voucher(KEY.public_key, channel, other_amount, sig)
    assert not verify_voucher(KEY.public_key, other_channel, amount, sig)
    assert not verify_voucher(KeyPair.generate().public_key, channel, amount, sig)
    assert not verify_voucher(KEY.public_key, channel, amount, sig[:-1])
    bit = data.draw(st.integers(0, 64 * 8 - 1))
    flipped = bytearray(sig)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert not verify_voucher(KEY.public_key, channel, amount, bytes(flipped))


def test_out_of_range_amounts_never_verify():
    sig = KEY.sign(voucher_message(bytes(32), 0))
    assert not verify_voucher(KEY.public_key, bytes(32), -1, sig)
    assert not verify_voucher(KEY.public_key, bytes(32), bcs.U64_MAX + 1, sig)
    with pytest.raises(ValueError):
        voucher_message(bytes(32), bcs.U64_MAX + 1)


def test_parse_refuses_other_bytes():
    with pytest.raises(ValueError):
        parse_voucher_message(b"x" * MESSAGE_LENGTH)
    with pytest.raises(ValueError):
        parse_voucher_message(voucher_message(bytes(32), 5)[:-1])


def test_json_round_trip_keeps_big_amounts_exact():
    voucher = Voucher.sign(KEY, bytes(32), bcs.U64_MAX)
    data = json.loads(json.dumps(voucher.to_json()))
    assert data["amount_mist"] == str(bcs.U64_MAX)
    assert Voucher.from_json(data) == voucher
    with pytest.raises(ValueError, match="malformed"):
        Voucher.from_json({**data, "amount_mist": "1.5"})


def test_short_channel_ids_are_left_padded_like_sui():
    assert bcs.normalize_address("0x2") == "0x" + "00" * 31 + "02"
    assert voucher_message("0x2", 1) == voucher_message(bytes(31) + b"\x02", 1)
