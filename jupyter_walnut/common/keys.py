"""Ed25519 identities with Sui-compatible addresses.

A Sui address is BLAKE2b-256 over the signature-scheme flag byte (0x00 for Ed25519)
followed by the 32-byte public key. Keys are stored in Sui's Bech32 `suiprivkey1...`
form in files readable by their owner only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from .errors import WalnutError

ED25519_FLAG = 0x00
SUI_PRIVKEY_HRP = "suiprivkey"


class KeyError_(WalnutError, ValueError):
    """A key could not be read or used."""


def sui_address(public_key: bytes) -> str:
    """The Sui address of an Ed25519 public key, as 0x-prefixed hex."""
    if len(public_key) != 32:
        raise KeyError_("an Ed25519 public key is 32 bytes")
    digest = hashlib.blake2b(bytes([ED25519_FLAG]) + public_key, digest_size=32).hexdigest()
    return "0x" + digest


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class KeyPair:
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        if len(seed) != 32:
            raise KeyError_("an Ed25519 private key seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_bech32(cls, text: str) -> KeyPair:
        hrp, data = bech32_decode(text.strip())
        if hrp != SUI_PRIVKEY_HRP:
            raise KeyError_(f"expected a '{SUI_PRIVKEY_HRP}1...' key")
        if len(data) != 33 or data[0] != ED25519_FLAG:
            raise KeyError_("only Ed25519 Sui private keys are supported")
        return cls.from_seed(bytes(data[1:]))

    @classmethod
    def from_sui_keystore_entry(cls, entry: str) -> KeyPair:
        """A `sui.keystore` entry: base64 of flag || 32-byte seed (or the Bech32 form)."""
        entry = entry.strip()
        if entry.startswith(SUI_PRIVKEY_HRP):
            return cls.from_bech32(entry)
        try:
            raw = base64.b64decode(entry, validate=True)
        except ValueError as exc:
            raise KeyError_("keystore entry is not base64") from exc
        if len(raw) != 33 or raw[0] != ED25519_FLAG:
            raise KeyError_("only Ed25519 keystore entries are supported")
        return cls.from_seed(raw[1:])

    @property
    def seed(self) -> bytes:
        return self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def address(self) -> str:
        return sui_address(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def to_bech32(self) -> str:
        return bech32_encode(SUI_PRIVKEY_HRP, bytes([ED25519_FLAG]) + self.seed)

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Write the key owner-only; never replaces an existing key unless asked."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError as exc:
            raise KeyError_(f"a key already exists at {path}; refusing to overwrite it") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(self.to_bech32() + "\n")
        os.chmod(path, 0o600)

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise KeyError_(f"no key at {path}") from exc
        return cls.from_bech32(text)

    def __repr__(self) -> str:  # never print the secret
        return f"KeyPair(address={self.address})"


# --- Bech32 (BIP-173), as used by Sui's `suiprivkey` encoding -----------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: list[int]) -> int:
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((top >> i) & 1) else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = bits = 0
    ret: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise KeyError_("invalid bech32 data")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            ret.append((acc >> bits) & maxv)
    if pad:
        if bits:
            ret.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise KeyError_("invalid bech32 padding")
    return ret


def bech32_encode(hrp: str, data: bytes) -> str:
    values = _convertbits(data, 8, 5, True)
    polymod = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in values + checksum)


def bech32_decode(text: str) -> tuple[str, list[int]]:
    if text.lower() != text and text.upper() != text:
        raise KeyError_("mixed-case bech32 string")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise KeyError_("not a bech32 string")
    hrp = text[:pos]
    try:
        values = [_CHARSET.index(c) for c in text[pos + 1 :]]
    except ValueError as exc:
        raise KeyError_("invalid bech32 character") from exc
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise KeyError_("bech32 checksum mismatch")
    return hrp, _convertbits(values[:-6], 5, 8, False)


# --- The `sui` CLI's own files --------------------------------------------------


def sui_config_dir() -> Path:
    """Where the `sui` CLI keeps client.yaml and sui.keystore ($SUI_CONFIG_DIR honoured)."""
    env = os.environ.get("SUI_CONFIG_DIR")
    return Path(env).expanduser() if env else Path.home() / ".sui" / "sui_config"


def to_sui_keystore_entry(key: KeyPair) -> str:
    """The `sui.keystore` form: base64 of flag || 32-byte seed."""
    return base64.b64encode(bytes([ED25519_FLAG]) + key.seed).decode()


def load_sui_keystore(path: Path | None = None) -> list[KeyPair]:
    """The Ed25519 keys of a `sui.keystore` (a JSON list); other schemes are skipped."""
    path = Path(path) if path is not None else sui_config_dir() / "sui.keystore"
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeyError_(f"no sui keystore at {path}") from exc
    except ValueError as exc:
        raise KeyError_(f"{path} is not a sui keystore (JSON list)") from exc
    if not isinstance(entries, list):
        raise KeyError_(f"{path} is not a sui keystore (JSON list)")
    keys = []
    for entry in entries:
        try:
            keys.append(KeyPair.from_sui_keystore_entry(str(entry)))
        except KeyError_:
            continue  # secp256k1/r1 entries: not usable for Ed25519 vouchers
    return keys


def sui_active_key(config_dir: Path | None = None) -> KeyPair:
    """The key of the `sui` CLI's active address, from its client.yaml and keystore."""
    config_dir = Path(config_dir) if config_dir is not None else sui_config_dir()
    client = config_dir / "client.yaml"
    try:
        text = client.read_text()
    except FileNotFoundError as exc:
        raise KeyError_(f"no sui client config at {client}") from exc
    # Two flat keys are all we need; reading them by line avoids a YAML dependency.
    keystore, active = config_dir / "sui.keystore", None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("File:"):
            keystore = Path(stripped.split(":", 1)[1].strip().strip("\"'"))
        elif stripped.startswith("active_address:"):
            active = stripped.split(":", 1)[1].strip().strip("\"'").lower()
    keys = load_sui_keystore(keystore)
    if active in (None, "", "~", "null"):
        if not keys:
            raise KeyError_(f"no Ed25519 key in {keystore}")
        return keys[0]
    for key in keys:
        if key.address == active:
            return key
    raise KeyError_(f"the active sui address {active} has no Ed25519 key in {keystore}")
