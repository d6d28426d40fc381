"""REST for the sidebar's history, spend chart, reputation and Provider sections (#9).

    GET /walnut/analytics/history        {"sessions": [...], "jobs": [...],
                                          "spend_by_day": [{day, cost_mist, cumulative_mist}],
                                          "total_mist"}
    GET /walnut/analytics/history.csv    the sessions and jobs as CSV (a download)
    GET /walnut/analytics/providers      {"providers": [{provider_address, reliability,
                                          evidence, ...}]}
    GET /walnut/analytics/provider       {"enabled": false} or, when this machine also runs
                                          a provider ($WALNUT_PROVIDER_HOME or
                                          ~/.walnut/provider), its earnings and utilisation

Spend is counted from sessions only: a job's cost is the cost of the sessions it used.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tornado import web

from ..jobs.store import JobStore
from ..jobs.tables import SafeCSVWriter
from ..reputation import provider_reputation
from ..store import RenterSession
from .handlers import WalnutHandler

DAY = 86400
MAX_DAYS = 90


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def session_row(s: RenterSession) -> dict:
    check = s.extra.get("verification") or {}
    return {
        "kind": "session", "id": s.id, "name": s.shape, "node": s.node,
        "provider_address": s.provider_address, "provider_url": s.provider_url.split("#")[0],
        "shape": s.shape, "status": s.status, "reason": s.reason,
        "started_at": s.started_at, "ended_at": s.ended_at,
        "duration_s": s.running_seconds, "cost_mist": s.cost_mist,
        "verification": check.get("status"),
        "verification_reasons": check.get("reasons", []) + check.get("warnings", []),
    }


def job_row(job: dict) -> dict:
    attempts = job.get("attempts") or []
    ended, created = job.get("ended_at"), job.get("created_at")
    return {
        "kind": "job", "id": job["id"], "name": job.get("name", ""),
        "node": ", ".join(sorted({a.get("node", "") for a in attempts} - {""})),
        "provider_address": "", "provider_url": "", "shape": "",
        "status": job.get("status", ""), "reason": job.get("error", ""),
        "started_at": created, "ended_at": ended,
        "duration_s": int(ended - created) if ended and created else None,
        "cost_mist": job.get("cost_mist", 0),
        "verification": {True: "passed", False: "failed"}.get(job.get("verified")),
        "verification_reasons": [job["verification"]] if job.get("verification") else [],
    }


def spend_by_day(sessions: list[RenterSession], now: float | None = None) -> list[dict]:
    """Cost per UTC day (the day a session started), every day from the first to today."""
    now = time.time() if now is None else now
    costs: dict[str, int] = {}
    for s in sessions:
        if s.cost_mist:
            day = _day(s.started_at or s.created_at)
            costs[day] = costs.get(day, 0) + s.cost_mist
    if not costs:
        return []
    first = max(datetime.strptime(min(costs), "%Y-%m-%d").replace(tzinfo=UTC).timestamp(),
                now - (MAX_DAYS - 1) * DAY)
    out, total, t = [], sum(v for d, v in costs.items() if d < _day(first)), first
    while _day(t) <= _day(now):
        day = _day(t)
        total += costs.get(day, 0)
        out.append({"day": day, "cost_mist": costs.get(day, 0), "cumulative_mist": total})
        t += DAY
    return out


def renter_history(manager) -> dict:
    sessions = [s for s in manager.store.list() if not s.id.startswith("x-")]
    jobs: list[dict] = []
    jobs_db = manager.home / "jobs.sqlite"
    if jobs_db.exists():
        store = JobStore(jobs_db)
        try:
            jobs = store.list()
        finally:
            store.close()
    return {"sessions": [session_row(s) for s in sessions],
            "jobs": [job_row(j) for j in jobs],
            "spend_by_day": spend_by_day(sessions),
            "total_mist": sum(s.cost_mist for s in sessions)}


CSV_COLUMNS = ["kind", "id", "name", "node", "provider_address", "shape", "status",
               "started_at", "ended_at", "duration_s", "cost_mist", "verification", "reason"]


def history_csv(history: dict) -> str:
    buf = io.StringIO()
    writer = SafeCSVWriter(buf)  # provider-given names and reasons never run as formulas
    writer.writerow(CSV_COLUMNS)
    iso = lambda ts: datetime.fromtimestamp(ts, UTC).isoformat() if ts else ""  # noqa: E731
    for row in history["sessions"] + history["jobs"]:
        writer.writerow([iso(row[c]) if c in ("started_at", "ended_at") else
                         ("" if row[c] is None else row[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def local_provider_home() -> Path | None:
    """This machine's provider home, if it has ever served a session."""
    env = os.environ.get("WALNUT_PROVIDER_HOME")
    home = Path(env) if env else Path.home() / ".walnut" / "provider"
    return home if (home / "state" / "provider.sqlite").exists() else None


class HistoryHandler(WalnutHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps(renter_history(self.walnut)))


class HistoryCSVHandler(WalnutHandler):
    @web.authenticated
    def get(self) -> None:
        self.set_header("Content-Disposition",
                        'attachment; filename="walnut-history.csv"')
        self.finish(history_csv(renter_history(self.walnut)),
                    set_content_type="text/csv; charset=utf-8")


class ProvidersHandler(WalnutHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps({"providers": provider_reputation(self.walnut)}))


class LocalProviderHandler(WalnutHandler):
    @web.authenticated
    async def get(self) -> None:
        home = local_provider_home()
        history = await local_provider_history(home) if home is not None else None
        if history is None:
            self.finish(json.dumps({"enabled": False}))
            return
        self.finish(json.dumps({"enabled": True, "home": str(home), **history}))


async def local_provider_history(home: Path) -> dict | None:
    """This machine's provider history, asked of `walnut-provider` itself: the renter's
    server never imports the provider's code (the roles stay independent packages)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jupyter_walnut.provider.cli", "--home", str(home),
        "status", "--history", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    try:
        history = json.loads(out[:MAX_HISTORY_BYTES]) if proc.returncode == 0 else None
    except ValueError:  # "no session records yet", or no provider installed
        return None
    return history if isinstance(history, dict) else None


MAX_HISTORY_BYTES = 4 * 1024 * 1024


def analytics_handlers() -> list[tuple[str, type]]:
    return [
        (r"/walnut/analytics/history", HistoryHandler),
        (r"/walnut/analytics/history\.csv", HistoryCSVHandler),
        (r"/walnut/analytics/providers", ProvidersHandler),
        (r"/walnut/analytics/provider", LocalProviderHandler),
    ]
