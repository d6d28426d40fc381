"""Stores written by the previous release (money in the JSON `extra` column) open with the
current code: every amount lands in its own column unchanged, nothing else is lost, and
opening again changes nothing. The files are from tests/data/make_legacy_stores.py."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from jupyter_walnut.common.models import ProviderMoney, RenterMoney, Settlement, money_fields
from jupyter_walnut.provider import analytics
from jupyter_walnut.provider.store import SessionStore
from jupyter_walnut.renter.store import RenterStore

DATA = Path(__file__).parent / "data"
EXPECT = json.loads((DATA / "legacy_expect.json").read_text())


def copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(DATA / name, target)
    return target


def dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def check_migrated(old: dict, new: dict, fields: tuple[str, ...],
                   fallbacks: dict) -> None:
    """The new public view holds the old one's fields, the old extra's money at top level
    (the old readers' fallback where a key was missing), and the rest of the old extra."""
    moved = {k: v for k, v in old["extra"].items() if k in fields}
    for key, value in old.items():
        if key != "extra":
            assert new[key] == value, key
    for key in fields:
        if key in new:  # the provider never shows the voucher's signature
            assert new[key] == moved.get(key, fallbacks.get(key, new[key])), key
    assert new["extra"] == {k: v for k, v in old["extra"].items() if k not in fields}


def test_a_renter_store_of_the_previous_release_keeps_every_amount(tmp_path):
    path = copy(tmp_path, "legacy_renter.sqlite")
    store = RenterStore(path)
    sessions = {s.id: s for s in store.list()}
    assert sorted(sessions) == sorted(EXPECT["renter"])
    for sid, old in EXPECT["renter"].items():
        s = sessions[sid]
        check_migrated(old, s.public(), money_fields(RenterMoney),
                       {"deposit_mist": old["budget_mist"], "voucher_mist": 0,
                        "claimed_mist": 0, "refunded_mist": 0, "settlement": "none"})
    running = sessions["s-0000000000000001"]
    assert (running.deposit_mist, running.voucher_mist, running.settlement) == \
        (900_000, 38_000, Settlement.OPEN)
    closing = sessions["s-0000000000000003"]
    assert (closing.settlement, closing.refund_at, closing.settlement_error) == \
        (Settlement.CLOSING, 1_790_000_700.5, "node busy")
    assert closing.extra == {"unreachable_since": 1_790_000_030.0}
    # written before deposits were recorded: the budget was its deposit, no channel to follow
    bare = sessions["s-0000000000000005"]
    assert (bare.deposit_mist, bare.voucher_mist, bare.settlement) == (45_000, 0, Settlement.NONE)
    assert store.kernel("k-local-1") == ("s-0000000000000001", "k-remote-1")
    store.close()
    migrated = dump(path)
    RenterStore(path).close()
    assert dump(path) == migrated  # opening a migrated store again is a no-op


def test_a_provider_store_of_the_previous_release_keeps_every_amount(tmp_path):
    path = copy(tmp_path, "legacy_provider.sqlite")
    raw = sqlite3.connect(path)
    old_extra = {r[0]: json.loads(r[1]) for r in raw.execute("SELECT id, extra FROM sessions")}
    raw.close()
    store = SessionStore(path)
    records = {r.id: r for r in store.list()}
    assert sorted(records) == sorted(EXPECT["provider"])
    for sid, old in EXPECT["provider"].items():
        rec = records[sid]
        check_migrated(old, rec.public(), money_fields(ProviderMoney), {})
        # the signature of the newest voucher is kept, to claim it, but never shown
        assert rec.voucher_signature == old_extra[sid].get("voucher_signature")
        assert "voucher_signature" not in rec.public()
    assert records["s-00000000000000a1"].claimed_at == 1_790_000_020.25
    lost = records["s-00000000000000a3"]
    assert (lost.settlement, lost.lost_mist, lost.claimed_mist) == \
        (Settlement.LOST, 14_000, 5_000)
    # settled before claimed_mist was recorded: its voucher is what was claimed, as before
    assert records["s-00000000000000a4"].claimed_mist == 19_000
    assert records["s-00000000000000a2"].extra == {"paid_now_mist": 10_000}
    assert analytics.earnings(list(records.values())) == EXPECT["earnings"]
    # the channel bindings survive: a second session on a paid channel is refused
    assert store.channel_session(records["s-00000000000000a2"].channel_id) == \
        "s-00000000000000a2"
    store.close()
    migrated = dump(path)
    SessionStore(path).close()
    assert dump(path) == migrated


def test_money_changes_only_through_its_columns_and_never_moves_back(tmp_path):
    store = SessionStore(copy(tmp_path, "legacy_provider.sqlite"))
    sid = "s-00000000000000a1"
    with pytest.raises(ValueError, match="voucher_mist is a money column"):
        store.update(sid, extra={"voucher_mist": 1})
    with pytest.raises(ValueError, match="deposit_mist is a money column"):
        store.update(sid, deposit_mist=1)
    # a late writer with a smaller voucher changes nothing
    assert not store.update_money(sid, monotonic="voucher_mist", voucher_mist=37_000,
                                  voucher_signature="ef" * 64)
    assert (store.get(sid).voucher_mist, store.get(sid).voucher_signature) == \
        (38_000, "cd" * 64)
    # nor does a voucher for a channel that settled meanwhile
    assert not store.update_money("s-00000000000000a2", monotonic="voucher_mist",
                                  expect={"settlement": Settlement.OPEN},
                                  voucher_mist=40_000)
    assert store.get("s-00000000000000a2").voucher_mist == 30_000
    assert store.update_money(sid, monotonic="voucher_mist", voucher_mist=39_000,
                              voucher_signature="ef" * 64)
    assert store.get(sid).voucher_mist == 39_000
    store.close()


def test_an_unreadable_legacy_amount_is_kept_aside_and_the_store_still_opens(tmp_path):
    path = copy(tmp_path, "legacy_renter.sqlite")
    raw = sqlite3.connect(path)
    with raw:  # hand-edited or corrupt: not MIST, too large for a column, no known state
        raw.execute("UPDATE sessions SET extra = ? WHERE id = 's-0000000000000002'",
                    (json.dumps({"deposit_mist": "60000", "voucher_mist": 2**64,
                                 "claimed_mist": True, "settlement": "weird"}),))
    raw.close()
    store = RenterStore(path)
    s = store.get("s-0000000000000002")
    assert (s.deposit_mist, s.voucher_mist, s.claimed_mist, s.settlement) == \
        (60_000, 0, 0, Settlement.NONE)  # the budget was the deposit
    assert s.extra == {"unreadable_deposit_mist": "60000", "unreadable_voucher_mist": 2**64,
                       "unreadable_claimed_mist": True, "unreadable_settlement": "weird"}
    # the others moved as usual, and the session's other facts can still change
    assert store.get("s-0000000000000001").voucher_mist == 38_000
    store.update(s.id, extra={**s.extra, "note": "kept"})
    assert store.get(s.id).extra["note"] == "kept"
    store.close()


def sessions_table(path: Path) -> tuple:
    db = sqlite3.connect(path)
    try:
        return (db.execute("SELECT sql FROM sqlite_master WHERE name = 'sessions'").fetchone(),
                db.execute("SELECT * FROM sessions ORDER BY id").fetchall())
    finally:
        db.close()


def test_a_migration_cut_short_leaves_the_old_store_as_it_was(tmp_path):
    path = copy(tmp_path, "legacy_renter.sqlite")
    before = sessions_table(path)

    class CutShort(RenterStore):
        moved = 0

        def _from_extra(self, row):
            CutShort.moved += 1
            if CutShort.moved == 3:  # a crash half way through the rows
                raise KeyboardInterrupt
            return super()._from_extra(row)

    with pytest.raises(KeyboardInterrupt):
        CutShort(path)
    assert sessions_table(path) == before  # no column added, no extra emptied
    store = RenterStore(path)  # the next open migrates it whole
    assert store.get("s-0000000000000002").claimed_mist == 30_000
    store.close()
