"""The ledger interface shared by the local (SQLite) and Sui implementations.

Both implement the rules of the Move package in contracts/: the same checks in the
same order, the same abort codes. Money is integer MIST everywhere.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..common.errors import WalnutError
from ..common.keys import KeyPair
from . import bcs

# Move abort codes (contracts/sources/*.move use the same numbers) and off-chain codes
# (>= 100) that only the Python side raises. Names are stable: callers match on them.
ABORT_CODES: dict[str, int] = {
    "E_NOT_RENTER": 1,
    "E_NOT_PROVIDER": 2,
    "E_BAD_SIGNATURE": 3,
    "E_STALE_VOUCHER": 4,
    "E_CHANNEL_CLOSED": 5,
    "E_CLOSE_ALREADY_REQUESTED": 6,
    "E_CLOSE_NOT_REQUESTED": 7,
    "E_CHALLENGE_PERIOD_ACTIVE": 8,
    "E_ZERO_AMOUNT": 9,
    "E_BAD_PUBLIC_KEY": 10,
    "E_NOT_OWNER": 11,
    "E_PROVIDER_RETIRED": 12,
    "E_BAD_FINGERPRINT": 13,
    "E_CHANNEL_CLOSING": 14,
    "E_DEPOSIT_EXHAUSTED": 15,
    "E_INSUFFICIENT_FUNDS": 100,
    "E_UNKNOWN_CHANNEL": 101,
    "E_UNKNOWN_PROVIDER": 102,
    "E_UNSUPPORTED": 103,
    "E_INVALID_ARGUMENT": 104,
    "E_NODE": 105,
}
CODE_NAMES = {code: name for name, code in ABORT_CODES.items()}

# The one mapping of ledger codes to HTTP statuses, for every role's API: 402 where money is
# missing, 409 where the channel's state forbids it now, 503 where the ledger itself failed.
HTTP_STATUS: dict[str, int] = {
    "E_NOT_RENTER": 403,
    "E_NOT_PROVIDER": 403,
    "E_BAD_SIGNATURE": 400,
    "E_STALE_VOUCHER": 409,
    "E_CHANNEL_CLOSED": 409,
    "E_CLOSE_ALREADY_REQUESTED": 409,
    "E_CLOSE_NOT_REQUESTED": 409,
    "E_CHALLENGE_PERIOD_ACTIVE": 409,
    "E_ZERO_AMOUNT": 400,
    "E_BAD_PUBLIC_KEY": 400,
    "E_NOT_OWNER": 403,
    "E_PROVIDER_RETIRED": 409,
    "E_BAD_FINGERPRINT": 400,
    "E_CHANNEL_CLOSING": 409,
    "E_DEPOSIT_EXHAUSTED": 402,
    "E_INSUFFICIENT_FUNDS": 402,
    "E_UNKNOWN_CHANNEL": 404,
    "E_UNKNOWN_PROVIDER": 404,
    "E_UNSUPPORTED": 400,
    "E_INVALID_ARGUMENT": 400,
    "E_NODE": 503,
}

FINGERPRINT_LENGTH = 32  # SHA-256 of the provider's TLS certificate (DER)


class LedgerError(WalnutError):
    """A refused ledger operation. `code` is the stable name, `abort_code` its number,
    `status` its HTTP status (HTTP_STATUS); `message` is the text without the code."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ABORT_CODES:
            raise ValueError(f"unknown ledger error code {code}")
        super().__init__(message, status=HTTP_STATUS[code])
        self.code = code
        self.abort_code = ABORT_CODES[code]

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"  # logs and CLIs keep the stable name

    @classmethod
    def from_abort(cls, abort_code: int, detail: str = "") -> LedgerError:
        name = CODE_NAMES.get(abort_code)
        if name is None:
            return cls("E_NODE", f"transaction aborted with unknown code {abort_code} {detail}")
        return cls(name, detail or "the Move contract refused the transaction")


Signer = KeyPair | str  # a key where the ledger must sign, an address where it need not


def address_of(signer: Signer) -> str:
    if isinstance(signer, KeyPair):
        return signer.address
    return normalize(signer)


def normalize(address: str | bytes) -> str:
    try:
        return bcs.normalize_address(address)
    except ValueError as exc:
        raise LedgerError("E_INVALID_ARGUMENT", str(exc)) from exc


def normalize_channel_id(channel_id: str | bytes) -> str:
    """The one spelling of a channel id (0x + 64 lower-case hex digits) that the ledgers
    store and the provider keys its sessions by: `0xAB..`, `ab..` and `0x0ab..` are one
    channel, so no spelling can pay for a second session."""
    if not isinstance(channel_id, str | bytes):
        raise LedgerError("E_INVALID_ARGUMENT", "a channel id is 0x-hex (32 bytes)")
    return normalize(channel_id)


def check_amount(amount: int, *, what: str = "amount", allow_zero: bool = False) -> int:
    # bool is an int in Python; money must be a real integer, never a float.
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise LedgerError("E_INVALID_ARGUMENT", f"{what} must be an integer number of MIST")
    if amount < 0 or amount > bcs.U64_MAX:
        raise LedgerError("E_INVALID_ARGUMENT", f"{what} must be between 0 and 2**64-1 MIST")
    if amount == 0 and not allow_zero:
        raise LedgerError("E_ZERO_AMOUNT", f"{what} must be more than 0 MIST")
    return amount


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ProviderEntry:
    provider_id: str  # 0x-hex id of the registry entry (a Sui object id)
    owner: str  # the provider's address: channels name it, claims come from it
    endpoint: str
    tls_fingerprint: str  # hex SHA-256 of the TLS certificate
    specs: str  # free-form JSON describing the hardware
    price_per_second_mist: int
    active: bool = True


@dataclass(frozen=True)
class Channel:
    channel_id: str
    renter: str
    provider: str
    voucher_pubkey: bytes
    deposited: int  # everything ever locked: opening deposit plus top-ups
    claimed: int  # paid to the provider so far (the highest voucher honoured)
    refunded: int  # returned to the renter at close
    price_per_second_mist: int
    challenge_period_ms: int
    close_requested_at_ms: int | None = None
    closed: bool = False

    @property
    def locked(self) -> int:
        """MIST still held by the channel."""
        return self.deposited - self.claimed - self.refunded

    @property
    def status(self) -> str:
        if self.closed:
            return "closed"
        return "closing" if self.close_requested_at_ms is not None else "open"

    def close_allowed_at_ms(self) -> int | None:
        if self.close_requested_at_ms is None:
            return None
        return self.close_requested_at_ms + self.challenge_period_ms


class Ledger(abc.ABC):
    """Accounts, the provider registry and payment channels, with the contract's rules."""

    clock: Callable[[], int]

    # --- accounts ---------------------------------------------------------
    @abc.abstractmethod
    def balance(self, address: str) -> int: ...

    def fund(self, address: str, amount: int) -> int:
        """Faucet-style funding; only a local ledger can mint."""
        raise LedgerError("E_UNSUPPORTED", f"{type(self).__name__} cannot mint funds")

    # --- provider registry ------------------------------------------------
    @abc.abstractmethod
    def register_provider(
        self,
        owner: Signer,
        *,
        endpoint: str,
        tls_fingerprint: str,
        specs: str,
        price_per_second_mist: int,
    ) -> ProviderEntry: ...

    @abc.abstractmethod
    def update_provider(
        self,
        owner: Signer,
        provider_id: str,
        *,
        endpoint: str | None = None,
        tls_fingerprint: str | None = None,
        specs: str | None = None,
        price_per_second_mist: int | None = None,
    ) -> ProviderEntry: ...

    @abc.abstractmethod
    def retire_provider(self, owner: Signer, provider_id: str) -> ProviderEntry: ...

    @abc.abstractmethod
    def get_provider(self, provider_id: str) -> ProviderEntry: ...

    @abc.abstractmethod
    def list_providers(self, *, include_retired: bool = False) -> list[ProviderEntry]: ...

    # --- channels -----------------------------------------------------------
    @abc.abstractmethod
    def open_channel(
        self,
        renter: Signer,
        provider: str,
        voucher_pubkey: bytes,
        deposit: int,
        price_per_second_mist: int,
        challenge_period_s: int,
    ) -> Channel: ...

    @abc.abstractmethod
    def top_up(self, renter: Signer, channel_id: str, amount: int) -> Channel: ...

    @abc.abstractmethod
    def get_channel(self, channel_id: str) -> Channel: ...

    @abc.abstractmethod
    def claim(self, provider: Signer, channel_id: str, amount: int, signature: bytes) -> int:
        """Pay the provider the increase of this voucher over the last claim; returns it."""

    @abc.abstractmethod
    def provider_close(self, provider: Signer, channel_id: str) -> Channel:
        """The provider ends the channel; everything unclaimed returns to the renter."""

    @abc.abstractmethod
    def request_close(self, renter: Signer, channel_id: str) -> Channel:
        """Start the challenge period; the provider may still claim during it."""

    @abc.abstractmethod
    def finalize_close(self, caller: Signer, channel_id: str) -> Channel:
        """After the challenge period, return the unclaimed rest to the renter."""


def fingerprint_bytes(fingerprint: str) -> bytes:
    """32 bytes from hex, accepting the colon-separated form `openssl x509 -fingerprint` prints."""
    text = fingerprint.strip().lower().replace(":", "")
    if text.startswith("sha256="):
        text = text[len("sha256=") :]
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise LedgerError("E_BAD_FINGERPRINT", "the TLS fingerprint must be hex") from exc
    if len(raw) != FINGERPRINT_LENGTH:
        raise LedgerError("E_BAD_FINGERPRINT", "the TLS fingerprint is a 32-byte SHA-256")
    return raw
