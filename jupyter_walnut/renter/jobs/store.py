"""The renter's jobs on disk (SQLite in the Walnut home), so `walnut job status` works from
any process and a job outlives the laptop that submitted it."""

from __future__ import annotations

import json

from ...common.sqlite_store import SQLiteStore


class JobStore(SQLiteStore):
    schema = ("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, sweep_id TEXT,"
              " status TEXT, created_at REAL, data TEXT)")

    def put(self, job: dict) -> None:
        with self._db_locked():
            self._db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                             (job["id"], job.get("sweep_id"), job["status"], job["created_at"],
                              json.dumps(job)))

    def get(self, job_id: str) -> dict | None:
        with self._db_locked():
            row = self._db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, sweep_id: str | None = None) -> list[dict]:
        query, args = "SELECT data FROM jobs", []
        if sweep_id:
            query, args = query + " WHERE sweep_id = ?", [sweep_id]
        with self._db_locked():
            rows = self._db.execute(query + " ORDER BY created_at DESC", args).fetchall()
        return [json.loads(r[0]) for r in rows]
