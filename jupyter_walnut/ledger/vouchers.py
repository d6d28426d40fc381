"""Payment-channel vouchers: the signed statement "up to N MIST for channel C".

Byte layout of the signed message (57 bytes, fixed; identical to what
`walnut::voucher::message` builds in Move and checks with `sui::ed25519::ed25519_verify`):

    offset  size  field
    0       17    domain tag, the ASCII bytes "walnut-voucher-v1" (no length prefix)
    17      32    channel id: BCS `address` (the channel object's id, raw bytes)
    49      8     cumulative amount in MIST: BCS `u64`, little-endian

The signature is a plain 64-byte Ed25519 signature over these bytes by the channel's
renter voucher key (not a Sui "personal message" signature: no intent, no hashing).

Why this shape: the domain tag keeps a voucher from ever being valid as anything else
signed by the same key, and its version suffix lets a future layout coexist. The
channel id binds the voucher to one channel (and so to one provider and one deposit).
The amount is cumulative, so the newest voucher supersedes all earlier ones and no
nonce is needed: a replayed or out-of-order voucher is simply not higher than what
was already claimed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..common.errors import BadRequest
from ..common.keys import KeyPair, verify
from ..common.numbers import parse_int
from . import bcs

DOMAIN = b"walnut-voucher-v1"
MESSAGE_LENGTH = len(DOMAIN) + bcs.ADDRESS_LENGTH + 8
SIGNATURE_LENGTH = 64
PUBLIC_KEY_LENGTH = 32
_HEX_SIGNATURE = re.compile(rf"[0-9a-fA-F]{{{2 * SIGNATURE_LENGTH}}}")


class VoucherFieldError(BadRequest, ValueError):
    """A voucher's JSON fields are malformed (400); the message names the field."""


def voucher_fields(amount_mist: int, signature: bytes) -> dict[str, str]:
    """A voucher as JSON carries it, renter to provider (openapi.yaml's Voucher): the
    cumulative amount as a decimal string (JSON numbers lose precision past 2**53) and the
    signature as hex. The channel is the session's (its URL), or `channel_id` beside them."""
    return {"amount_mist": str(int(amount_mist)), "signature": bytes(signature).hex()}


def parse_voucher_fields(data: object, field: str = "") -> tuple[int, bytes]:
    """(amount, signature) from `voucher_fields`' form, checked; else a VoucherFieldError or
    NumberError (both 400) naming `field` and the bad key."""
    if not isinstance(data, dict):
        raise VoucherFieldError(f"{field or 'voucher: '}must be an object with amount_mist "
                                "and signature")
    amount = parse_int(data.get("amount_mist"), f"{field}amount_mist")
    signature = data.get("signature")
    if not isinstance(signature, str) or not _HEX_SIGNATURE.fullmatch(signature):
        raise VoucherFieldError(f"{field}signature: must be {2 * SIGNATURE_LENGTH} hex "
                                "characters (Ed25519)")
    return amount, bytes.fromhex(signature)


def voucher_message(channel_id: str | bytes, amount_mist: int) -> bytes:
    return DOMAIN + bcs.address(channel_id) + bcs.u64(amount_mist)


def parse_voucher_message(message: bytes) -> tuple[str, int]:
    """(channel id, amount) from message bytes; ValueError when they are not a voucher."""
    if len(message) != MESSAGE_LENGTH or not message.startswith(DOMAIN):
        raise ValueError("not a walnut voucher message")
    start = len(DOMAIN)
    channel = bcs.format_address(message[start : start + bcs.ADDRESS_LENGTH])
    amount = int.from_bytes(message[start + bcs.ADDRESS_LENGTH :], "little")
    return channel, amount


def verify_voucher(
    public_key: bytes, channel_id: str | bytes, amount_mist: int, signature: bytes
) -> bool:
    try:
        message = voucher_message(channel_id, amount_mist)
    except ValueError:
        return False
    return verify(bytes(public_key), bytes(signature), message)


@dataclass(frozen=True)
class Voucher:
    channel_id: str  # 0x-hex, 32 bytes
    amount_mist: int
    signature: bytes

    @classmethod
    def sign(cls, key: KeyPair, channel_id: str | bytes, amount_mist: int) -> Voucher:
        message = voucher_message(channel_id, amount_mist)
        return cls(bcs.normalize_address(channel_id), amount_mist, key.sign(message))

    @property
    def message(self) -> bytes:
        return voucher_message(self.channel_id, self.amount_mist)

    def verify(self, public_key: bytes) -> bool:
        return verify_voucher(public_key, self.channel_id, self.amount_mist, self.signature)

    def to_json(self) -> dict[str, object]:
        return {"channel_id": self.channel_id,
                **voucher_fields(self.amount_mist, self.signature)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Voucher:
        try:
            amount, signature = parse_voucher_fields(data)
            channel = bcs.normalize_address(str(data["channel_id"]))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"malformed voucher: {exc}") from exc
        return cls(channel, amount, signature)
