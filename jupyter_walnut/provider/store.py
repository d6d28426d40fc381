"""The provider's durable state: one SQLite file holding every session and its metering.

A restart of `walnut-provider` reads it back, so no session and no metered second is lost.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..common.errors import Conflict
from ..common.models import ProviderMoney, SessionStatus, Settlement, money_of
from ..common.money_store import MoneyStore
from ..common.sqlite_store import storage_error
from ..ledger import LedgerError
from ..ledger.base import normalize_channel_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    renter TEXT NOT NULL,
    renter_public_key TEXT NOT NULL,
    shape TEXT NOT NULL,
    image TEXT NOT NULL,
    gpus TEXT NOT NULL,
    cpus REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    price_mist_per_second INTEGER NOT NULL,
    max_seconds INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    running_ms INTEGER NOT NULL DEFAULT 0,
    checkpoint_wall REAL,
    gateway_url TEXT,
    runtime_ref TEXT,
    runtime TEXT NOT NULL,
    gateway_token TEXT NOT NULL,
    access_token_hash TEXT NOT NULL,
    channel_id TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
    -- and the money columns of common/models.py ProviderMoney, added on open (money_store.py)
);
CREATE INDEX IF NOT EXISTS sessions_renter ON sessions (renter);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions (status);
-- one session per payment channel: a create reserves the channel (session_id NULL) before
-- it awaits anything, and the session's insert binds it
CREATE TABLE IF NOT EXISTS session_channels (
    channel_id TEXT PRIMARY KEY,
    session_id TEXT UNIQUE,
    reserved_at REAL NOT NULL
);
"""

ACTIVE = ("starting", "running")


@dataclass
class SessionRecord(ProviderMoney):
    id: str
    renter: str
    renter_public_key: str
    shape: str
    image: str
    gpus: list[int]
    cpus: float
    memory_mb: int
    price_mist_per_second: int
    max_seconds: int
    status: SessionStatus
    runtime: str
    gateway_token: str
    access_token_hash: str
    created_at: float
    reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    running_ms: int = 0
    checkpoint_wall: float | None = None
    gateway_url: str | None = None
    runtime_ref: str | None = None
    extra: dict = field(default_factory=dict)  # never money: that has its own columns

    @property
    def cost_mist(self) -> int:
        """Price x metered time, rounded down to the MIST: a renter never pays for a partial one."""
        return self.running_ms * self.price_mist_per_second // 1000

    def public(self) -> dict:
        """What the renter may see: never the tokens."""
        data = asdict(self)
        for secret in ("gateway_token", "access_token_hash", "gateway_url", "runtime_ref",
                       "voucher_signature", "away_vouchers"):
            data.pop(secret)
        # requirements at launch (environment_prep.py): their install's state
        data["environment"] = data["extra"].pop("environment", None) or {
            "state": "none", "step": "", "done": 0, "total": None, "requirements_hash": None,
            "error": None}
        data["running_seconds"] = self.running_ms // 1000
        data["cost_mist"] = self.cost_mist
        return data


class ChannelInUse(Conflict):
    """The channel is reserved by another create or already pays for a session."""


class SessionStore(MoneyStore):
    schema = SCHEMA
    money = ProviderMoney

    def _legacy_defaults(self, row: sqlite3.Row, money: dict) -> dict:
        # the previous earnings counted a settled session's voucher as claimed
        if money.get("settlement") in (Settlement.SETTLED, Settlement.LOST):
            return {"claimed_mist": money.get("voucher_mist", 0)}
        return {}

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._recover_channels()

    def _recover_channels(self) -> None:
        """At open no create is in flight: drop reservations a crash left unbound, and bind
        the channels of sessions written before reservations existed, in their normalised
        spelling (the first session wins where one channel paid for several)."""
        with self._db_locked() as db:
            db.execute("DELETE FROM session_channels WHERE session_id IS NULL")
            rows = db.execute(
                "SELECT id, channel_id, created_at FROM sessions WHERE channel_id IS NOT NULL "
                "AND id NOT IN (SELECT session_id FROM session_channels "
                "WHERE session_id IS NOT NULL) ORDER BY created_at").fetchall()
            for row in rows:
                try:
                    channel = normalize_channel_id(row["channel_id"])
                except LedgerError:
                    continue  # never a valid channel: nothing could have been paid from it
                db.execute("INSERT OR IGNORE INTO session_channels VALUES (?, ?, ?)",
                           (channel, row["id"], row["created_at"]))

    def _row(self, row: sqlite3.Row) -> SessionRecord:
        data = dict(row)
        data["gpus"] = json.loads(data["gpus"])
        data["extra"] = json.loads(data["extra"])
        return SessionRecord(**money_of(data))

    def reserve_channel(self, channel_id: str) -> None:
        """Take a (normalised) channel for one new session; ChannelInUse if it is taken."""
        try:
            with self._db_locked() as db:
                db.execute("INSERT INTO session_channels (channel_id, reserved_at) VALUES (?, ?)",
                           (channel_id, time.time()))
        except sqlite3.IntegrityError as exc:
            raise ChannelInUse(channel_id) from exc

    def release_channel(self, channel_id: str) -> None:
        """Give back a reservation no session was admitted on; a bound channel stays bound."""
        with self._db_locked() as db:
            db.execute("DELETE FROM session_channels WHERE channel_id = ? AND session_id IS NULL",
                       (channel_id,))

    def channel_session(self, channel_id: str) -> str | None:
        """The id of the session a channel pays for, or None (free or only reserved)."""
        with self._db_locked() as db:
            row = db.execute("SELECT session_id FROM session_channels WHERE channel_id = ?",
                             (channel_id,)).fetchone()
        return row["session_id"] if row else None

    def channel_reserved(self, channel_id: str) -> bool:
        with self._db_locked() as db:
            return db.execute("SELECT 1 FROM session_channels WHERE channel_id = ?",
                              (channel_id,)).fetchone() is not None

    def insert(self, rec: SessionRecord) -> None:
        """Insert a session; one with a channel binds that channel's reservation in the same
        transaction (ChannelInUse when it holds none)."""
        self._check_not_money({"extra": rec.extra})
        data = asdict(rec)
        data["gpus"] = json.dumps(rec.gpus)
        data["extra"] = json.dumps(rec.extra)
        cols, marks = ", ".join(data), ", ".join(f":{k}" for k in data)
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute(f"INSERT INTO sessions ({cols}) VALUES ({marks})", data)
                    if rec.channel_id is not None and db.execute(
                            "UPDATE session_channels SET session_id = ? "
                            "WHERE channel_id = ? AND session_id IS NULL",
                            (rec.id, rec.channel_id)).rowcount != 1:
                        raise ChannelInUse(rec.channel_id)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:  # a failed COMMIT may have rolled back already
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise storage_error(self.path, exc) from exc

    def update(self, session_id: str, **fields) -> None:
        """Any column but money (see `update_money`)."""
        self._check_not_money(fields)
        if "extra" in fields:
            fields["extra"] = json.dumps(fields["extra"])
        self._update("sessions", "id", session_id, fields)

    def get(self, session_id: str) -> SessionRecord | None:
        with self._db_locked():
            row = self._db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return self._row(row) if row else None

    def list(self, renter: str | None = None, statuses: tuple[str, ...] | None = None,
             channel_id: str | None = None) -> list[SessionRecord]:
        query, args = "SELECT * FROM sessions WHERE 1=1", []
        if channel_id is not None:
            query += " AND channel_id = ?"
            args.append(channel_id)
        if renter is not None:
            query += " AND renter = ?"
            args.append(renter)
        if statuses:
            query += f" AND status IN ({', '.join('?' * len(statuses))})"
            args.extend(statuses)
        with self._db_locked():
            rows = self._db.execute(query + " ORDER BY created_at", args).fetchall()
        return [self._row(r) for r in rows]

    def add_running_time(self, session_id: str, delta_ms: int, wall: float) -> None:
        """Metering: add elapsed running time (up to the session's maximum) and move the
        checkpoint, in one statement."""
        self.add_running_times([(session_id, delta_ms, wall)])

    def add_running_times(self, deltas: list[tuple[str, int, float]]) -> None:
        """Metering of many sessions in ONE transaction: (session id, elapsed ms, wall
        time) each. One commit (one WAL sync) a metering pass instead of one a session,
        which was a quarter of a core at 64 sessions; all of them or none are written."""
        rows = [(max(0, int(delta_ms)), wall, session_id)
                for session_id, delta_ms, wall in deltas]
        if not rows:
            return
        with self._db_locked() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    # a session is never metered past the time it bought (max_seconds)
                    "UPDATE sessions SET running_ms = MIN(running_ms + ?, max_seconds * 1000),"
                    " checkpoint_wall = ? WHERE id = ? AND status = 'running'", rows)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise




def now() -> float:
    return time.time()
