"""A store of sessions whose money lives in typed columns of its `sessions` table.

Written once for both roles: the columns come from the record's money dataclass
(`models.RenterMoney`, `models.ProviderMoney`); a store of the previous release, which kept
them in the JSON `extra` column, gets them on open, values moved out of `extra` in the same
transaction; and `update_money` is the one way to change them: one UPDATE of the named
columns, never a read-modify-write of a JSON bag.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .models import ChannelMoney, legacy_money, money_columns, money_fields
from .sqlite_store import SQLiteStore


class MoneyStore(SQLiteStore):
    money: type[ChannelMoney] = ChannelMoney

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._money_fields = frozenset(money_fields(self.money))
        self._migrate()

    def _migrate(self) -> None:
        """Give a sessions table of the previous release the money columns it lacks, values
        moved out of `extra`, in one transaction: a crash leaves the old store as it was, and
        a table that has every column is left alone (reopening is a no-op)."""
        columns = money_columns(self.money)
        with self._db_locked() as db:
            db.execute("BEGIN IMMEDIATE")  # a second process waits, then finds them added
            try:
                have = {r["name"] for r in db.execute("PRAGMA table_info(sessions)")}
                missing = {c: d for c, d in columns.items() if c not in have}
                for name, decl in missing.items():
                    db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {decl}")
                if missing:
                    for row in db.execute("SELECT * FROM sessions").fetchall():
                        values = self._from_extra(row)
                        sets = ", ".join(f"{k} = :{k}" for k in values)
                        db.execute(f"UPDATE sessions SET {sets} WHERE id = :_id",
                                   {**values, "_id": row["id"]})
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _legacy_defaults(self, row: sqlite3.Row, money: dict[str, Any]) -> dict[str, Any]:
        """What the previous release's readers assumed for a money key missing from extra
        (`money`: the keys it had, checked)."""
        return {}

    def _from_extra(self, row: sqlite3.Row) -> dict[str, Any]:
        extra = json.loads(row["extra"] or "{}")
        money, rest = legacy_money(self.money, extra,
                                   lambda found: self._legacy_defaults(row, found))
        return {**money, "extra": json.dumps(rest)}

    def _check_not_money(self, fields: dict[str, Any]) -> None:
        if taken := sorted(self._money_fields & set(fields)):
            raise ValueError(f"{taken[0]} is a money column: change it with update_money")
        if isinstance(fields.get("extra"), dict) and \
                (taken := sorted(self._money_fields & set(fields["extra"]))):
            raise ValueError(f"{taken[0]} is a money column, not an extra key")

    def update_money(self, session_id: str, *, monotonic: str | None = None,
                     expect: dict[str, Any] | None = None, **changes: Any) -> bool:
        """Set money columns of one session in one statement. With `monotonic` (a column
        being set) the row is left alone when that column already holds more than the new
        value, so a late writer never moves it back; with `expect`, unless those columns
        hold those values. True when the row changed."""
        guards = dict(expect or {})
        if not changes or (unknown := sorted((set(changes) | set(guards))
                                             - self._money_fields)):
            raise ValueError(f"not a money column: {unknown[0] if changes else '(none)'}")
        if monotonic is not None and monotonic not in changes:
            raise ValueError(f"monotonic column {monotonic} is not set")
        sets = ", ".join(f"{k} = :{k}" for k in changes)
        where = "".join(f" AND {k} = :_expect_{k}" for k in guards)
        if monotonic is not None:
            where += f" AND {monotonic} <= :{monotonic}"
        with self._db_locked() as db:
            cur = db.execute(f"UPDATE sessions SET {sets} WHERE id = :_id{where}",
                             {**changes, **{f"_expect_{k}": v for k, v in guards.items()},
                              "_id": session_id})
        return cur.rowcount == 1
