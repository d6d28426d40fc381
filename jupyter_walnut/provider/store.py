"""The provider's durable state: one SQLite file holding every session and its metering.

A restart of `walnut-provider` reads it back, so no session and no metered second is lost.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field

from ..sqlite_store import SQLiteStore

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
);
CREATE INDEX IF NOT EXISTS sessions_renter ON sessions (renter);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions (status);
"""

ACTIVE = ("starting", "running")


@dataclass
class SessionRecord:
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
    status: str
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
    channel_id: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def cost_mist(self) -> int:
        """Price x metered time, rounded down to the MIST: a renter never pays for a partial one."""
        return self.running_ms * self.price_mist_per_second // 1000

    def public(self) -> dict:
        """What the renter may see: never the tokens."""
        data = asdict(self)
        for secret in ("gateway_token", "access_token_hash", "gateway_url", "runtime_ref"):
            data.pop(secret)
        data["extra"] = {k: v for k, v in self.extra.items() if k != "voucher_signature"}
        data["running_seconds"] = self.running_ms // 1000
        data["cost_mist"] = self.cost_mist
        return data


class SessionStore(SQLiteStore):
    schema = SCHEMA

    def _row(self, row: sqlite3.Row) -> SessionRecord:
        data = dict(row)
        data["gpus"] = json.loads(data["gpus"])
        data["extra"] = json.loads(data["extra"])
        return SessionRecord(**data)

    def insert(self, rec: SessionRecord) -> None:
        data = asdict(rec)
        data["gpus"] = json.dumps(rec.gpus)
        data["extra"] = json.dumps(rec.extra)
        self._insert("sessions", data)

    def update(self, session_id: str, **fields) -> None:
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
        """Metering: add elapsed running time and move the checkpoint, in one statement."""
        with self._db_locked():
            self._db.execute(
                "UPDATE sessions SET running_ms = running_ms + ?, checkpoint_wall = ? "
                "WHERE id = ? AND status = 'running'",
                (max(0, int(delta_ms)), wall, session_id),
            )



def now() -> float:
    return time.time()
