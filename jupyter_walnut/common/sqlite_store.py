"""The one way Walnut keeps state on disk: an owner-only SQLite file in WAL mode, shared by
the threads of one process and by other processes (a provider and a server on one machine)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import StatusError


class StorageError(StatusError):
    """State could not be written: 507 when the disk is full, 503 when the file is locked or
    unreadable. A statement that fails changes nothing (SQLite rolls it back)."""


def storage_error(path: Path, exc: sqlite3.Error) -> StorageError:
    if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
        return StorageError(507, f"no space left on the disk holding {path}: free some space "
                                 "and try again")
    return StorageError(503, f"{path} is unavailable ({exc}); try again")


class SQLiteStore:
    schema = ""  # CREATE ... IF NOT EXISTS statements of the subclass

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.path.chmod(0o600)  # tokens and money live here
        self._db.row_factory = sqlite3.Row
        with self._db_locked() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=5000")
            if self.schema:
                db.executescript(self.schema)

    @contextmanager
    def _db_locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, for one thread at a time; a full or locked disk is a StorageError."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                raise storage_error(self.path, exc) from exc

    def check_writable(self) -> None:
        """Commit one tiny write, so that a full disk is found before anything else moves."""
        with self._db_locked() as db:
            db.execute("CREATE TABLE IF NOT EXISTS walnut_store_probe (at REAL)")
            db.execute("DELETE FROM walnut_store_probe")
            db.execute("INSERT INTO walnut_store_probe VALUES (julianday('now'))")

    def _insert(self, table: str, data: dict[str, Any]) -> None:
        cols = ", ".join(data)
        marks = ", ".join(f":{k}" for k in data)
        with self._db_locked():
            self._db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", data)

    def _update(self, table: str, key: str, value: Any, fields: dict[str, Any]) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        with self._db_locked():
            self._db.execute(f"UPDATE {table} SET {sets} WHERE {key} = :_key",
                             {**fields, "_key": value})

    def close(self) -> None:
        with self._db_locked():
            self._db.close()
