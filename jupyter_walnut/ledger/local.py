"""The embedded ledger: one SQLite file that several processes can share.

A provider process and a Jupyter Server on one machine open the same file. Every
operation is one `BEGIN IMMEDIATE` transaction (the write lock is taken before any
read, so two processes can never both read a balance and then both spend it), the
journal is WAL (readers do not block the writer) and a busy timeout makes a second
writer wait instead of failing. The rules and their order mirror contracts/sources.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import bcs
from .base import (
    Channel,
    Ledger,
    LedgerError,
    ProviderEntry,
    Signer,
    address_of,
    check_amount,
    fingerprint_bytes,
    normalize,
    normalize_channel_id,
    now_ms,
)
from .vouchers import PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, verify_voucher

# SQLite integers are signed 64-bit: the local ledger holds at most this much per row.
LOCAL_MAX_MIST = (1 << 63) - 1
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    address TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS providers (
    provider_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    tls_fingerprint TEXT NOT NULL,
    specs TEXT NOT NULL,
    price_per_second_mist INTEGER NOT NULL,
    active INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    channel_id TEXT PRIMARY KEY,
    renter TEXT NOT NULL,
    provider TEXT NOT NULL,
    voucher_pubkey BLOB NOT NULL,
    deposited INTEGER NOT NULL,
    claimed INTEGER NOT NULL,
    refunded INTEGER NOT NULL,
    price_per_second_mist INTEGER NOT NULL,
    challenge_period_ms INTEGER NOT NULL,
    close_requested_at_ms INTEGER,
    closed INTEGER NOT NULL,
    CHECK (claimed + refunded <= deposited)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
"""


class LocalLedger(Ledger):
    def __init__(self, path: str | Path, *, clock: Callable[[], int] = now_ms) -> None:
        self.path = Path(path)
        self.clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves.
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        # One lock for every use of the connection, reads included: CPython's sqlite3
        # module crashes (SIGSEGV) when two threads step statements of one connection at
        # once, or when one closes it while another is inside a call.
        self._lock = threading.Lock()
        self._closed = False
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self._tx() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> LocalLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One all-or-nothing transaction; a locked or full database is a clear LedgerError
        (E_NODE) and leaves nothing half-written."""
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise LedgerError("E_NODE", f"the local ledger is unavailable: {exc}") from exc
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                self._rollback()
                raise LedgerError("E_NODE", f"the local ledger is unavailable: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # e.g. the disk filled up at commit
                self._rollback()
                raise LedgerError("E_NODE", f"the local ledger is unavailable: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads: WAL readers need no transaction, only the lock."""
        with self._lock:
            self._check_open()
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                raise LedgerError("E_NODE", f"the local ledger is unavailable: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("E_NODE", "the local ledger is closed")

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # nothing was open any more

    def _event(self, db: sqlite3.Connection, kind: str, **data: object) -> None:
        db.execute(
            "INSERT INTO events (at_ms, kind, data) VALUES (?, ?, ?)",
            (self.clock(), kind, json.dumps(data, sort_keys=True)),
        )

    def events(self, since: int = 0) -> list[dict[str, object]]:
        """Every state change after sequence number `since`, oldest first."""
        with self._read() as db:
            rows = db.execute(
                "SELECT seq, at_ms, kind, data FROM events WHERE seq > ? ORDER BY seq", (since,)
            ).fetchall()
        return [{"seq": s, "at_ms": t, "kind": k, **json.loads(d)} for s, t, k, d in rows]

    # --- accounts ---------------------------------------------------------
    def balance(self, address: str) -> int:
        with self._read() as db:
            return self._balance_in(db, normalize(address))

    def total_supply(self) -> int:
        """All MIST in accounts plus all MIST locked in channels."""
        with self._read() as db:
            accounts = db.execute("SELECT COALESCE(SUM(balance), 0) FROM accounts").fetchone()
            locked = db.execute(
                "SELECT COALESCE(SUM(deposited - claimed - refunded), 0) FROM channels"
            ).fetchone()
        return accounts[0] + locked[0]

    def fund(self, address: str, amount: int) -> int:
        address = normalize(address)
        check_amount(amount)
        with self._tx() as db:
            balance = self._credit(db, address, amount)
            self._event(db, "Funded", address=address, amount=amount)
        return balance

    def _credit(self, db: sqlite3.Connection, address: str, amount: int) -> int:
        balance = self._balance_in(db, address) + amount
        if balance > LOCAL_MAX_MIST:
            raise LedgerError("E_INVALID_ARGUMENT", "the local ledger holds at most 2**63-1 MIST")
        db.execute(
            "INSERT INTO accounts (address, balance) VALUES (?, ?) "
            "ON CONFLICT (address) DO UPDATE SET balance = excluded.balance",
            (address, balance),
        )
        return balance

    def _debit(self, db: sqlite3.Connection, address: str, amount: int) -> None:
        balance = self._balance_in(db, address)
        if balance < amount:
            raise LedgerError(
                "E_INSUFFICIENT_FUNDS", f"{address} has {balance} MIST, needs {amount} MIST"
            )
        db.execute("UPDATE accounts SET balance = ? WHERE address = ?", (balance - amount, address))

    @staticmethod
    def _balance_in(db: sqlite3.Connection, address: str) -> int:
        row = db.execute("SELECT balance FROM accounts WHERE address = ?", (address,)).fetchone()
        return row[0] if row else 0

    # --- provider registry ------------------------------------------------
    def register_provider(
        self,
        owner: Signer,
        *,
        endpoint: str,
        tls_fingerprint: str,
        specs: str,
        price_per_second_mist: int,
    ) -> ProviderEntry:
        owner_address = address_of(owner)
        fingerprint = fingerprint_bytes(tls_fingerprint).hex()
        check_amount(price_per_second_mist, what="price", allow_zero=True)
        _check_i64(price_per_second_mist)
        entry = ProviderEntry(
            provider_id=bcs.format_address(os.urandom(32)),
            owner=owner_address,
            endpoint=endpoint,
            tls_fingerprint=fingerprint,
            specs=specs,
            price_per_second_mist=price_per_second_mist,
        )
        with self._tx() as db:
            db.execute(
                "INSERT INTO providers VALUES (?, ?, ?, ?, ?, ?, 1)",
                (
                    entry.provider_id,
                    entry.owner,
                    entry.endpoint,
                    entry.tls_fingerprint,
                    entry.specs,
                    entry.price_per_second_mist,
                ),
            )
            self._event(db, "ProviderRegistered", **_provider_event(entry))
        return entry

    def update_provider(
        self,
        owner: Signer,
        provider_id: str,
        *,
        endpoint: str | None = None,
        tls_fingerprint: str | None = None,
        specs: str | None = None,
        price_per_second_mist: int | None = None,
    ) -> ProviderEntry:
        sender = address_of(owner)
        with self._tx() as db:
            entry = self._provider_in(db, provider_id)
            _check_owner(entry, sender)
            if not entry.active:
                raise LedgerError("E_PROVIDER_RETIRED", f"provider {entry.provider_id} is retired")
            changes: dict[str, object] = {}
            if endpoint is not None:
                changes["endpoint"] = endpoint
            if tls_fingerprint is not None:
                changes["tls_fingerprint"] = fingerprint_bytes(tls_fingerprint).hex()
            if specs is not None:
                changes["specs"] = specs
            if price_per_second_mist is not None:
                check_amount(price_per_second_mist, what="price", allow_zero=True)
                changes["price_per_second_mist"] = _check_i64(price_per_second_mist)
            for column, value in changes.items():
                db.execute(
                    f"UPDATE providers SET {column} = ? WHERE provider_id = ?",
                    (value, entry.provider_id),
                )
            updated = self._provider_in(db, entry.provider_id)
            self._event(db, "ProviderUpdated", **_provider_event(updated))
        return updated

    def retire_provider(self, owner: Signer, provider_id: str) -> ProviderEntry:
        sender = address_of(owner)
        with self._tx() as db:
            entry = self._provider_in(db, provider_id)
            _check_owner(entry, sender)
            if not entry.active:
                raise LedgerError("E_PROVIDER_RETIRED", f"provider {entry.provider_id} is retired")
            db.execute(
                "UPDATE providers SET active = 0 WHERE provider_id = ?", (entry.provider_id,)
            )
            self._event(db, "ProviderRetired", provider_id=entry.provider_id, owner=entry.owner)
        return self.get_provider(entry.provider_id)

    def get_provider(self, provider_id: str) -> ProviderEntry:
        with self._read() as db:
            return self._provider_in(db, provider_id)

    def list_providers(self, *, include_retired: bool = False) -> list[ProviderEntry]:
        query = "SELECT * FROM providers" + ("" if include_retired else " WHERE active = 1")
        with self._read() as db:
            return [_provider_row(row) for row in db.execute(query + " ORDER BY rowid")]

    @staticmethod
    def _provider_in(db: sqlite3.Connection, provider_id: str) -> ProviderEntry:
        return _provider_row(_one_row(db, "providers", "provider_id", normalize(provider_id),
                                      "E_UNKNOWN_PROVIDER", f"no provider entry {provider_id}"))

    # --- channels -----------------------------------------------------------
    def open_channel(
        self,
        renter: Signer,
        provider: str,
        voucher_pubkey: bytes,
        deposit: int,
        price_per_second_mist: int,
        challenge_period_s: int,
    ) -> Channel:
        renter_address = address_of(renter)
        provider_address = normalize(provider)
        check_amount(deposit, what="deposit")
        _check_i64(deposit)
        check_amount(price_per_second_mist, what="price", allow_zero=True)
        _check_i64(price_per_second_mist)
        check_amount(challenge_period_s, what="challenge period", allow_zero=True)
        challenge_period_ms = _check_i64(challenge_period_s * 1000)
        if len(bytes(voucher_pubkey)) != PUBLIC_KEY_LENGTH:
            raise LedgerError("E_BAD_PUBLIC_KEY", "the voucher public key is 32 bytes (Ed25519)")
        channel = Channel(
            channel_id=bcs.format_address(os.urandom(32)),
            renter=renter_address,
            provider=provider_address,
            voucher_pubkey=bytes(voucher_pubkey),
            deposited=deposit,
            claimed=0,
            refunded=0,
            price_per_second_mist=price_per_second_mist,
            challenge_period_ms=challenge_period_ms,
        )
        with self._tx() as db:
            self._debit(db, renter_address, deposit)
            db.execute(
                "INSERT INTO channels VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?, NULL, 0)",
                (
                    channel.channel_id,
                    channel.renter,
                    channel.provider,
                    channel.voucher_pubkey,
                    deposit,
                    price_per_second_mist,
                    challenge_period_ms,
                ),
            )
            self._event(
                db,
                "ChannelOpened",
                channel_id=channel.channel_id,
                renter=channel.renter,
                provider=channel.provider,
                deposit=deposit,
                price_per_second_mist=price_per_second_mist,
                challenge_period_ms=challenge_period_ms,
            )
        return channel

    def top_up(self, renter: Signer, channel_id: str, amount: int) -> Channel:
        sender = address_of(renter)
        check_amount(amount, allow_zero=True)
        with self._tx() as db:
            channel = self._channel_in(db, channel_id)
            if sender != channel.renter:
                raise LedgerError("E_NOT_RENTER", "only the channel's renter can top it up")
            _check_open(channel)
            if channel.close_requested_at_ms is not None:
                raise LedgerError("E_CHANNEL_CLOSING", "the renter has asked to close this channel")
            if amount == 0:
                raise LedgerError("E_ZERO_AMOUNT", "a top-up must be more than 0 MIST")
            deposited = _check_i64(channel.deposited + amount)
            self._debit(db, sender, amount)
            db.execute(
                "UPDATE channels SET deposited = ? WHERE channel_id = ?",
                (deposited, channel.channel_id),
            )
            self._event(
                db,
                "ChannelToppedUp",
                channel_id=channel.channel_id,
                amount=amount,
                deposited=deposited,
            )
            return self._channel_in(db, channel.channel_id)

    def get_channel(self, channel_id: str) -> Channel:
        with self._read() as db:
            return self._channel_in(db, channel_id)

    def channels(self, *, renter: str | None = None, provider: str | None = None) -> list[Channel]:
        query, args = "SELECT * FROM channels WHERE 1=1", []
        if renter is not None:
            query, args = query + " AND renter = ?", [*args, normalize(renter)]
        if provider is not None:
            query, args = query + " AND provider = ?", [*args, normalize(provider)]
        with self._read() as db:
            return [_channel_row(row) for row in db.execute(query + " ORDER BY rowid", args)]

    def claim(self, provider: Signer, channel_id: str, amount: int, signature: bytes) -> int:
        sender = address_of(provider)
        check_amount(amount, what="voucher amount", allow_zero=True)
        with self._tx() as db:
            channel = self._channel_in(db, channel_id)
            if sender != channel.provider:
                raise LedgerError("E_NOT_PROVIDER", "only the channel's provider can claim")
            _check_open(channel)
            signature = bytes(signature)
            if len(signature) != SIGNATURE_LENGTH or not verify_voucher(
                channel.voucher_pubkey, channel.channel_id, amount, signature
            ):
                raise LedgerError(
                    "E_BAD_SIGNATURE",
                    "the voucher is not signed by this channel's renter key for this amount",
                )
            payable = min(amount, channel.deposited)
            if payable <= channel.claimed:
                if amount > channel.claimed:
                    raise LedgerError(
                        "E_DEPOSIT_EXHAUSTED",
                        f"everything deposited ({channel.deposited} MIST) is already claimed",
                    )
                raise LedgerError(
                    "E_STALE_VOUCHER",
                    f"voucher for {amount} MIST is not above the {channel.claimed} MIST "
                    "already claimed",
                )
            paid = payable - channel.claimed
            db.execute(
                "UPDATE channels SET claimed = ? WHERE channel_id = ?",
                (payable, channel.channel_id),
            )
            self._credit(db, channel.provider, paid)
            self._event(
                db,
                "Claimed",
                channel_id=channel.channel_id,
                voucher_amount=amount,
                paid=paid,
                claimed=payable,
            )
        return paid

    def provider_close(self, provider: Signer, channel_id: str) -> Channel:
        sender = address_of(provider)
        with self._tx() as db:
            channel = self._channel_in(db, channel_id)
            if sender != channel.provider:
                raise LedgerError("E_NOT_PROVIDER", "only the channel's provider can close it")
            _check_open(channel)
            return self._close(db, channel, by="provider")

    def request_close(self, renter: Signer, channel_id: str) -> Channel:
        sender = address_of(renter)
        with self._tx() as db:
            channel = self._channel_in(db, channel_id)
            if sender != channel.renter:
                raise LedgerError("E_NOT_RENTER", "only the channel's renter can ask to close it")
            _check_open(channel)
            if channel.close_requested_at_ms is not None:
                raise LedgerError("E_CLOSE_ALREADY_REQUESTED", "a close is already pending")
            now = self.clock()
            db.execute(
                "UPDATE channels SET close_requested_at_ms = ? WHERE channel_id = ?",
                (now, channel.channel_id),
            )
            self._event(
                db,
                "CloseRequested",
                channel_id=channel.channel_id,
                requested_at_ms=now,
                close_allowed_at_ms=now + channel.challenge_period_ms,
            )
            return self._channel_in(db, channel.channel_id)

    def finalize_close(self, caller: Signer, channel_id: str) -> Channel:
        address_of(caller)  # anyone may finalize: the rest goes to the renter regardless
        with self._tx() as db:
            channel = self._channel_in(db, channel_id)
            _check_open(channel)
            allowed_at = channel.close_allowed_at_ms()
            if allowed_at is None:
                raise LedgerError("E_CLOSE_NOT_REQUESTED", "the renter has not asked to close")
            if self.clock() < allowed_at:
                raise LedgerError(
                    "E_CHALLENGE_PERIOD_ACTIVE",
                    f"the challenge period runs until {allowed_at} ms (unix time)",
                )
            return self._close(db, channel, by="renter")

    def _close(self, db: sqlite3.Connection, channel: Channel, *, by: str) -> Channel:
        refund = channel.locked
        if refund:
            self._credit(db, channel.renter, refund)
        db.execute(
            "UPDATE channels SET refunded = ?, closed = 1 WHERE channel_id = ?",
            (refund, channel.channel_id),
        )
        self._event(
            db,
            "ChannelClosed",
            channel_id=channel.channel_id,
            by=by,
            paid=channel.claimed,
            refunded=refund,
        )
        return self._channel_in(db, channel.channel_id)

    @staticmethod
    def _channel_in(db: sqlite3.Connection, channel_id: str) -> Channel:
        return _channel_row(_one_row(db, "channels", "channel_id",
                                     normalize_channel_id(channel_id),
                                     "E_UNKNOWN_CHANNEL", f"no channel {channel_id}"))


def _one_row(db: sqlite3.Connection, table: str, key: str, value: str, code: str,
             missing: str) -> tuple:
    """The row of `table` whose primary `key` is `value`, or the ledger's `code` error."""
    row = db.execute(f"SELECT * FROM {table} WHERE {key} = ?", (value,)).fetchone()
    if row is None:
        raise LedgerError(code, missing)
    return row


def _check_i64(amount: int) -> int:
    if amount > LOCAL_MAX_MIST:
        raise LedgerError("E_INVALID_ARGUMENT", "the local ledger holds at most 2**63-1 MIST")
    return amount


def _check_open(channel: Channel) -> None:
    if channel.closed:
        raise LedgerError("E_CHANNEL_CLOSED", f"channel {channel.channel_id} is closed")


def _check_owner(entry: ProviderEntry, sender: str) -> None:
    if sender != entry.owner:
        raise LedgerError("E_NOT_OWNER", "only the entry's owner can change it")


def _provider_row(row: tuple) -> ProviderEntry:
    return ProviderEntry(
        provider_id=row[0],
        owner=row[1],
        endpoint=row[2],
        tls_fingerprint=row[3],
        specs=row[4],
        price_per_second_mist=row[5],
        active=bool(row[6]),
    )


def _provider_event(entry: ProviderEntry) -> dict[str, object]:
    return {
        "provider_id": entry.provider_id,
        "owner": entry.owner,
        "endpoint": entry.endpoint,
        "tls_fingerprint": entry.tls_fingerprint,
        "price_per_second_mist": entry.price_per_second_mist,
    }


def _channel_row(row: tuple) -> Channel:
    return Channel(
        channel_id=row[0],
        renter=row[1],
        provider=row[2],
        voucher_pubkey=bytes(row[3]),
        deposited=row[4],
        claimed=row[5],
        refunded=row[6],
        price_per_second_mist=row[7],
        challenge_period_ms=row[8],
        close_requested_at_ms=row[9],
        closed=bool(row[10]),
    )
