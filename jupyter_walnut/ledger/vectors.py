"""Voucher test vectors shared by the Python tests and the Move tests.

`contracts/test_vectors.json` is the source of truth for both sides; the Move test
module `contracts/tests/voucher_vectors_tests.move` is rendered from it (Move cannot read
files), and tests/test_vouchers.py checks that the two still agree. Regenerate both with
`python -m jupyter_walnut.ledger.vectors contracts/`.

Keys come from fixed seeds: Ed25519 signatures are deterministic, so the file is stable.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from ..common.keys import KeyPair
from . import bcs
from .vouchers import DOMAIN, MESSAGE_LENGTH, voucher_message

JSON_NAME = "test_vectors.json"
MOVE_NAME = "tests/voucher_vectors_tests.move"


def _key(label: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(b"walnut test vector key " + label.encode()).digest())


def _channel(label: str) -> str:
    return bcs.format_address(hashlib.sha256(b"walnut test channel " + label.encode()).digest())


_VALID = [
    ("zero amount", "alice", _channel("a"), 0),
    ("one mist", "alice", _channel("a"), 1),
    ("one sui", "alice", _channel("b"), 1_000_000_000),
    ("u64 max", "bob", _channel("c"), bcs.U64_MAX),
    ("low channel id", "bob", "0x" + "00" * 31 + "01", 123_456_789),
]


def _valid_entry(name: str, signer: str, channel: str, amount: int) -> dict[str, object]:
    key = _key(signer)
    message = voucher_message(channel, amount)
    return {
        "name": name,
        "secret_key": key.to_bech32(),  # a published test key: never fund it
        "public_key": key.public_key.hex(),
        "address": key.address,
        "channel_id": channel,
        "amount_mist": str(amount),
        "message": message.hex(),
        "signature": key.sign(message).hex(),
    }


def _invalid_entries() -> list[dict[str, object]]:
    alice, bob = _key("alice"), _key("bob")
    channel, other = _channel("a"), _channel("b")
    good = alice.sign(voucher_message(channel, 500))
    flipped = bytearray(good)
    flipped[10] ^= 0x01

    def entry(name: str, pk: bytes, chan: str, amount: int, sig: bytes) -> dict[str, object]:
        return {
            "name": name,
            "public_key": pk.hex(),
            "channel_id": chan,
            "amount_mist": str(amount),
            "message": voucher_message(chan, amount).hex(),
            "signature": bytes(sig).hex(),
        }

    return [
        entry("wrong key", bob.public_key, channel, 500, good),
        entry("raised amount", alice.public_key, channel, 501, good),
        entry("wrong channel", alice.public_key, other, 500, good),
        entry("flipped signature bit", alice.public_key, channel, 500, bytes(flipped)),
        entry("truncated signature", alice.public_key, channel, 500, good[:63]),
        entry("zero signature", alice.public_key, channel, 500, bytes(64)),
    ]


def build() -> dict[str, object]:
    return {
        "description": "Walnut payment-channel vouchers: raw Ed25519 over the message bytes.",
        "layout": (
            f"ASCII {DOMAIN.decode()!r} ({len(DOMAIN)} bytes) || bcs(channel_id: address, "
            f"32 bytes) || bcs(cumulative_amount_mist: u64, 8 bytes LE); {MESSAGE_LENGTH} bytes"
        ),
        "domain": DOMAIN.hex(),
        "valid": [_valid_entry(*case) for case in _VALID],
        "invalid": _invalid_entries(),
    }


def render_json(vectors: dict[str, object]) -> str:
    return json.dumps(vectors, indent=2) + "\n"


def render_move(vectors: dict) -> str:
    lines = [
        "// Generated from contracts/test_vectors.json by",
        "// `python -m jupyter_walnut.ledger.vectors contracts/`: do not edit by hand.",
        "#[test_only]",
        "module walnut::voucher_vectors_tests;",
        "",
        "use walnut::voucher;",
        "",
        "#[test]",
        "fun domain_tag() {",
        f'    assert!(voucher::domain() == x"{vectors["domain"]}", 0);',
        "}",
    ]
    for kind, verifies in (("valid", "voucher::verify"), ("invalid", "!voucher::verify")):
        for i, case in enumerate(vectors[kind]):
            lines += [
                "",
                f"// {case['name']}",
                "#[test]",
                f"fun {kind}_{i}() {{",
                f'    let pk = x"{case["public_key"]}";',
                f'    let sig = x"{case["signature"]}";',
                f"    let channel = @{case['channel_id']};",
                f"    let amount: u64 = {case['amount_mist']};",
                f'    assert!(voucher::message(channel, amount) == x"{case["message"]}", 0);',
                f"    assert!({verifies}(&pk, &sig, channel, amount), 1);",
            ]
            if kind == "valid":  # only the valid cases carry the signer's address
                lines.append(f"    assert!(voucher::address_of_public_key(&pk) == "
                             f"@{case['address']}, 2);")
            lines.append("}")
    return "\n".join(lines) + "\n"


def write(contracts_dir: Path) -> None:
    vectors = build()
    (contracts_dir / JSON_NAME).write_text(render_json(vectors))
    (contracts_dir / MOVE_NAME).write_text(render_move(vectors))


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "contracts"))
