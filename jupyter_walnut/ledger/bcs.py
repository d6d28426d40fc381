"""The few BCS encodings the voucher and the Sui transactions need.

BCS (Binary Canonical Serialization) is what Move's `std::bcs::to_bytes` produces:
integers little-endian at their fixed width, an `address` as its 32 raw bytes, a
`vector<u8>` as a ULEB128 length followed by the bytes.
"""

from __future__ import annotations

U64_MAX = (1 << 64) - 1
ADDRESS_LENGTH = 32


def u64(value: int) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise ValueError(f"not a u64: {value!r}")
    return value.to_bytes(8, "little")


def uleb128(value: int) -> bytes:
    if value < 0:
        raise ValueError("ULEB128 encodes non-negative integers")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def byte_vector(data: bytes) -> bytes:
    return uleb128(len(data)) + bytes(data)


def string(text: str) -> bytes:
    """Move's `std::string::String` is a UTF-8 `vector<u8>` on the wire."""
    return byte_vector(text.encode("utf-8"))


def address(value: str | bytes) -> bytes:
    return parse_address(value)


def parse_address(value: str | bytes) -> bytes:
    """32 raw bytes from 0x-hex (short forms are left-padded, as Sui does) or raw bytes."""
    if isinstance(value, bytes | bytearray):
        if len(value) != ADDRESS_LENGTH:
            raise ValueError("an address or object id is 32 bytes")
        return bytes(value)
    text = value.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if not text or len(text) > 2 * ADDRESS_LENGTH:
        raise ValueError(f"not an address or object id: {value!r}")
    try:
        return bytes.fromhex(text.rjust(2 * ADDRESS_LENGTH, "0"))
    except ValueError as exc:
        raise ValueError(f"not an address or object id: {value!r}") from exc


def format_address(raw: bytes) -> str:
    if len(raw) != ADDRESS_LENGTH:
        raise ValueError("an address or object id is 32 bytes")
    return "0x" + raw.hex()


def normalize_address(value: str | bytes) -> str:
    return format_address(parse_address(value))
