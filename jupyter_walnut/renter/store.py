"""The renter's sessions on disk (SQLite under the Walnut home), so a restarted Jupyter
Server knows them. Holds session access tokens: owner-only permissions."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field

from ..common.models import RenterMoney, SessionStatus, money_of
from ..common.money_store import MoneyStore
from . import kernel_links

SCHEMA = """
CREATE TABLE IF NOT EXISTS kernels (
    local_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    provider_url TEXT NOT NULL,
    provider_address TEXT NOT NULL,
    node TEXT NOT NULL,
    shape TEXT NOT NULL,
    image TEXT NOT NULL,
    gpus INTEGER NOT NULL,
    gpu_model TEXT,
    cpus REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    price_mist_per_second INTEGER NOT NULL,
    max_seconds INTEGER NOT NULL,
    budget_mist INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    running_seconds INTEGER NOT NULL DEFAULT 0,
    cost_mist INTEGER NOT NULL DEFAULT 0,
    access_token TEXT NOT NULL,
    channel_id TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
    -- and the money columns of common/models.py RenterMoney, added on open (money_store.py)
);
-- the launch pipeline's steps of a session (renter/launch.py), one row per step
CREATE TABLE IF NOT EXISTS launch_steps (
    session_id TEXT NOT NULL,
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    PRIMARY KEY (session_id, step)
);
"""

ACTIVE = ("starting", "running")


@dataclass
class RenterSession(RenterMoney):
    id: str
    provider_url: str
    provider_address: str
    node: str
    shape: str
    image: str
    gpus: int
    cpus: float
    memory_mb: int
    price_mist_per_second: int
    max_seconds: int
    budget_mist: int
    status: SessionStatus
    created_at: float
    access_token: str
    gpu_model: str | None = None
    reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    running_seconds: int = 0
    cost_mist: int = 0
    extra: dict = field(default_factory=dict)  # usage, verification: never money

    @property
    def remaining_mist(self) -> int:
        return max(0, self.budget_mist - self.cost_mist)

    def public(self) -> dict:
        data = asdict(self)
        data.pop("access_token")
        data["remaining_mist"] = self.remaining_mist
        data["usage"] = self.extra.get("usage")  # live CPU/GPU figures while it runs
        data["kernel_name"] = kernel_name(self.id)
        data["kernel_links"] = kernel_links.of(self.id)  # "reconnecting" while cut off
        return data


def kernel_name(session_id: str) -> str:
    return f"walnut-{session_id}"


class RenterStore(MoneyStore):
    schema = SCHEMA
    money = RenterMoney

    def _legacy_defaults(self, row: sqlite3.Row, money: dict) -> dict:
        return {"deposit_mist": row["budget_mist"]}  # the previous readers' fallback

    def insert(self, s: RenterSession) -> None:
        self._check_not_money({"extra": s.extra})
        data = asdict(s)
        data["extra"] = json.dumps(s.extra)
        self._insert("sessions", data)

    def update(self, session_id: str, **fields) -> None:
        """Any column but money (see `update_money`)."""
        self._check_not_money(fields)
        if "extra" in fields:
            fields["extra"] = json.dumps(fields["extra"])
        self._update("sessions", "id", session_id, fields)

    def get(self, session_id: str) -> RenterSession | None:
        with self._db_locked():
            row = self._db.execute("SELECT * FROM sessions WHERE id = ?",
                                   (session_id,)).fetchone()
        return self._row(row) if row else None

    def list(self, statuses: tuple[str, ...] | None = None) -> list[RenterSession]:
        query, args = "SELECT * FROM sessions", []
        if statuses:
            query += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            args = list(statuses)
        with self._db_locked():
            rows = self._db.execute(query + " ORDER BY created_at DESC", args).fetchall()
        return [self._row(r) for r in rows]

    # --- the launch pipeline's steps (renter/launch.py) -------------------------------------

    def save_launch_step(self, session_id: str, step: str, state: str, detail: str,
                         at: float) -> None:
        """A step's latest state; its row keeps its place, so steps list in the order run."""
        with self._db_locked() as db:
            db.execute("INSERT INTO launch_steps VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (session_id, step) DO UPDATE SET state = excluded.state, "
                       "detail = excluded.detail, at = excluded.at",
                       (session_id, step, state, detail, at))

    def launch_steps(self, session_id: str) -> list[dict]:
        with self._db_locked() as db:
            rows = db.execute("SELECT step, state, detail, at FROM launch_steps "
                              "WHERE session_id = ? ORDER BY rowid", (session_id,)).fetchall()
        return [dict(r) for r in rows]

    # --- which server kernel is which remote kernel (re-adopted after a server restart) ---

    def save_kernel(self, local_id: str, session_id: str, remote_id: str) -> None:
        with self._db_locked():
            self._db.execute("INSERT OR REPLACE INTO kernels VALUES (?, ?, ?, ?)",
                             (local_id, session_id, remote_id, time.time()))

    def kernel(self, local_id: str) -> tuple[str, str] | None:
        """(session id, remote kernel id) of a server kernel, if it is a Walnut one."""
        with self._db_locked():
            row = self._db.execute("SELECT session_id, remote_id FROM kernels WHERE local_id = ?",
                                   (local_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def kernels(self) -> list[tuple[str, str, str]]:
        with self._db_locked():
            rows = self._db.execute("SELECT local_id, session_id, remote_id FROM kernels "
                                    "ORDER BY created_at").fetchall()
        return [tuple(r) for r in rows]

    def forget_kernel(self, local_id: str) -> None:
        with self._db_locked():
            self._db.execute("DELETE FROM kernels WHERE local_id = ?", (local_id,))

    @staticmethod
    def _row(row: sqlite3.Row) -> RenterSession:
        data = dict(row)
        data["extra"] = json.loads(data["extra"])
        return RenterSession(**money_of(data))

