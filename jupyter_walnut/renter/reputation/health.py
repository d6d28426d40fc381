"""Health probes of providers, kept in the renter's SQLite (table `health_probes`).

The marketplace view asks every provider's status endpoint (RenterManager.offers); each
answer or failure is one sample here: reachable or not, latency, free session slots and
version. The schedule is bounded: at most one sample per provider per `MIN_GAP_S`, however
often the sidebar refreshes (so uptime is not skewed by who looked when), and samples older
than `RETENTION_S` are dropped.
"""

from __future__ import annotations

import time
from pathlib import Path

from ...common.sqlite_store import SQLiteStore

MIN_GAP_S = 15.0
RETENTION_S = 7 * 24 * 3600
UPTIME_WINDOW_S = 7 * 24 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS health_probes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_url TEXT NOT NULL,
    provider_address TEXT,
    at REAL NOT NULL,
    ok INTEGER NOT NULL,
    latency_ms REAL,
    free_slots INTEGER,
    version TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS health_probes_url_at ON health_probes (provider_url, at);
"""


class HealthLog(SQLiteStore):
    schema = SCHEMA

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._pruned_at = 0.0
        self.min_gap_s = MIN_GAP_S

    def record(self, url: str, ok: bool, *, address: str | None = None,
               latency_ms: float | None = None, free_slots: int | None = None,
               version: str | None = None, error: str | None = None,
               at: float | None = None) -> bool:
        """Store one sample unless this provider has one younger than `min_gap_s`."""
        at = time.time() if at is None else at
        with self._db_locked():
            last = self._db.execute("SELECT MAX(at) FROM health_probes WHERE provider_url = ?",
                                    (url,)).fetchone()[0]
            if last is not None and at - last < self.min_gap_s:
                return False
            self._db.execute(
                "INSERT INTO health_probes (provider_url, provider_address, at, ok, latency_ms,"
                " free_slots, version, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (url, address, at, int(ok), latency_ms, free_slots, version, error))
            if at - self._pruned_at > 3600:
                self._db.execute("DELETE FROM health_probes WHERE at < ?", (at - RETENTION_S,))
                self._pruned_at = at
        return True

    def uptime(self, url: str, since: float | None = None) -> tuple[int, int]:
        """(samples answered, samples not) in the window."""
        since = time.time() - UPTIME_WINDOW_S if since is None else since
        with self._db_locked():
            row = self._db.execute(
                "SELECT COALESCE(SUM(ok), 0), COUNT(*) FROM health_probes "
                "WHERE provider_url = ? AND at >= ?", (url, since)).fetchone()
        return int(row[0]), int(row[1]) - int(row[0])

    def last(self, url: str) -> dict | None:
        with self._db_locked():
            row = self._db.execute("SELECT * FROM health_probes WHERE provider_url = ? "
                                   "ORDER BY at DESC LIMIT 1", (url,)).fetchone()
        return dict(row) if row else None

    def last_ok(self, url: str) -> dict | None:
        with self._db_locked():
            row = self._db.execute("SELECT * FROM health_probes WHERE provider_url = ? AND ok"
                                   " ORDER BY at DESC LIMIT 1", (url,)).fetchone()
        return dict(row) if row else None

    def address_of(self, url: str) -> str | None:
        """The provider address last seen at this URL (unreachable rows lack one)."""
        with self._db_locked():
            row = self._db.execute(
                "SELECT provider_address FROM health_probes WHERE provider_url = ? AND "
                "provider_address IS NOT NULL ORDER BY at DESC LIMIT 1", (url,)).fetchone()
        return row[0] if row else None

    def history(self, url: str | None = None, since: float = 0.0) -> list[dict]:
        query, args = "SELECT * FROM health_probes WHERE at >= ?", [since]
        if url is not None:
            query += " AND provider_url = ?"
            args.append(url)
        with self._db_locked():
            rows = self._db.execute(query + " ORDER BY at", args).fetchall()
        return [dict(r) for r in rows]
