"""The one way Walnut keeps state on disk: an owner-only SQLite file in WAL mode, shared by
the threads of one process and by other processes (a provider and a server on one machine)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any


class SQLiteStore:
    schema = ""  # CREATE ... IF NOT EXISTS statements of the subclass

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.path.chmod(0o600)  # tokens and money live here
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        if self.schema:
            self._db.executescript(self.schema)

    def _insert(self, table: str, data: dict[str, Any]) -> None:
        cols = ", ".join(data)
        marks = ", ".join(f":{k}" for k in data)
        with self._lock:
            self._db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", data)

    def _update(self, table: str, key: str, value: Any, fields: dict[str, Any]) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE {table} SET {sets} WHERE {key} = :_key",
                             {**fields, "_key": value})

    def close(self) -> None:
        with self._lock:
            self._db.close()
