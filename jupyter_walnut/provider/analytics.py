"""What a provider earns and how busy it is, from its own session records (and, for the
cross-check, the ledger): `walnut-provider status --history`, the Prometheus gauges and the
sidebar's Provider section.

Money is integer MIST. "Claimed" is what settled sessions took from their channels;
"pending" is what renters have signed but the provider has not claimed yet (open
settlements); "metered unpaid" is running cost not yet covered by a voucher.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from ..common.money import format_sui
from .config import ConfigError, load_config
from .store import ACTIVE, SessionRecord, SessionStore

DAY = 86400


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _day_start(day: str) -> float:
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def _busy_by_day(rec: SessionRecord, now: float, out: dict[str, float]) -> None:
    """Split the session's running wall time over the UTC days it touched."""
    if rec.started_at is None:
        return
    start, end = rec.started_at, rec.ended_at or now
    while start < end:
        day = day_of(start)
        cut = min(end, _day_start(day) + DAY)
        out[day] = out.get(day, 0.0) + (cut - start)
        start = cut


def earnings(records: list[SessionRecord]) -> dict[str, int]:
    claimed = pending = unpaid = lost = 0
    for rec in records:
        if rec.settlement.final:
            claimed += rec.claimed_mist
            lost += rec.lost_mist  # signed, the channel closed unclaimed
        else:
            pending += rec.voucher_mist
            unpaid += max(0, rec.cost_mist - rec.voucher_mist)
    return {"claimed_mist": claimed, "pending_mist": pending, "metered_unpaid_mist": unpaid,
            "lost_mist": lost}


def history(store: SessionStore, max_sessions: int = 1, days: int = 30,
            now: float | None = None) -> dict:
    """Totals and per-day series (oldest first) over the last `days` days."""
    now = time.time() if now is None else now
    records = store.list()
    served = [r for r in records if r.started_at is not None]
    failed_starts = [r for r in records if r.status == "failed" and r.started_at is None]
    busy: dict[str, float] = {}
    for rec in served:
        _busy_by_day(rec, now, busy)
    first = day_of(now - (days - 1) * DAY)
    series = []
    for i in range(days):
        day = day_of(now - (days - 1 - i) * DAY)
        in_day = [r for r in records if day_of(r.ended_at or r.created_at) == day]
        span = min(DAY, now - _day_start(day))  # today: only the part that has passed
        e = earnings([r for r in in_day if r.status not in ACTIVE])
        series.append({
            "day": day, "claimed_mist": e["claimed_mist"], "pending_mist": e["pending_mist"],
            "sessions": sum(1 for r in in_day if r.started_at is not None),
            "failed_starts": sum(1 for r in in_day if r in failed_starts),
            "busy_seconds": round(busy.get(day, 0.0)),
            # 4 decimals: a few busy seconds in a day are still visible as more than 0
            "utilisation_pct": round(100 * busy.get(day, 0.0) / (span * max(1, max_sessions)),
                                     4) if span > 0 else 0.0,
        })
    return {"since": first, "days": days, "max_sessions": max_sessions,
            "sessions_served": len(served), "failed_starts": len(failed_starts),
            "active_sessions": sum(1 for r in records if r.status in ACTIVE),
            "running_seconds": sum(r.running_ms for r in records) // 1000,
            **earnings(records), "by_day": series}


def history_from_home(home: Path, days: int = 30) -> dict | None:
    """The history of the provider whose home this is, or None if it never ran."""
    db = Path(home) / "state" / "provider.sqlite"
    if not db.exists():
        return None
    try:
        max_sessions = load_config(Path(home) / "provider.toml").availability.max_sessions
    except (ConfigError, OSError):
        max_sessions = 1
    store = SessionStore(db)
    try:
        return history(store, max_sessions=max_sessions, days=days)
    finally:
        store.close()


def format_history(h: dict) -> str:
    lines = [
        f"Since     {h['since']} ({h['days']} days)",
        f"Sessions  {h['sessions_served']} served, {h['failed_starts']} failed to start, "
        f"{h['active_sessions']} active; {h['running_seconds']} s metered",
        f"Earnings  {format_sui(h['claimed_mist'])} claimed, "
        f"{format_sui(h['pending_mist'])} pending, "
        f"{format_sui(h['metered_unpaid_mist'])} metered but unpaid",
        "Day          claimed (MIST)  pending (MIST)  sessions  failed  busy",
    ]
    for d in h["by_day"]:
        if d["sessions"] or d["failed_starts"] or d["claimed_mist"] or d["busy_seconds"]:
            lines.append(f"{d['day']}  {d['claimed_mist']:>14}  {d['pending_mist']:>14}  "
                         f"{d['sessions']:>8}  {d['failed_starts']:>6}  "
                         f"{d['utilisation_pct']:>5.1f}%")
    return "\n".join(lines)


def print_history(home: Path, as_json: bool = False) -> int:
    h = history_from_home(home)
    if h is None:
        print(f"walnut-provider: no session records under {home} yet")
        return 0
    print(json.dumps(h, indent=2) if as_json else format_history(h))
    return 0


def refresh_earnings_metrics(metrics, store: SessionStore) -> None:
    """The Prometheus gauges from the durable records: right again after a restart."""
    records = store.list()
    e = earnings(records)
    metrics.earnings_claimed.set(e["claimed_mist"])
    metrics.earnings_pending.set(e["pending_mist"])
    metrics.earnings_lost.set(e["lost_mist"])
    metrics.sessions_served.set(sum(1 for r in records if r.started_at is not None))
    metrics.failed_starts.set(sum(1 for r in records
                                  if r.status == "failed" and r.started_at is None))
