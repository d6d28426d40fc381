"""Provider reputation (issue #9): health probes, evidence and the reliability score.

`decorate_offers` is called by RenterManager.offers(): it records the health samples of the
offers just probed and adds to every row `reliability` (0-100 or None), `verified` (the
last session-start check on this provider: true, false or None), `uptime_pct`, `attested`
and `evidence`. The formula is in `score.py` and docs/pages/reputation.md.
"""

from __future__ import annotations

import logging
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING

from .evidence import gather
from .health import HealthLog
from .score import Evidence, reliability

if TYPE_CHECKING:
    from ..renter.manager import RenterManager

log = logging.getLogger("walnut.reputation")

__all__ = ["Evidence", "HealthLog", "decorate_offers", "health_log", "provider_reputation",
           "reliability"]

_logs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def health_log(manager: RenterManager) -> HealthLog:
    """The manager's health log, in its own renter.sqlite."""
    hl = _logs.get(manager)
    if hl is None:
        hl = _logs[manager] = HealthLog(manager.store.path)
    return hl


def _address_of(row: dict, known: dict[str, str], hl: HealthLog) -> str | None:
    url = row["provider_url"]
    return row.get("provider_address") or known.get(url) or hl.address_of(url)


def _last_checks(manager: RenterManager) -> dict[str, bool]:
    last: dict[str, bool] = {}
    for s in manager.store.list():  # newest first
        check = s.extra.get("verification")
        if check is not None and s.provider_address not in last:
            last[s.provider_address] = bool(check.get("ok"))
    return last


def _attested(manager: RenterManager) -> dict[str, bool]:
    import json

    out: dict[str, bool] = {}
    try:
        entries = manager.ledger.list_providers()
    except Exception:  # no registry: nothing is attested as far as we can tell
        return out
    for e in entries:
        try:
            out[e.owner] = bool(json.loads(e.specs or "{}").get("attestation"))
        except (ValueError, AttributeError):
            out[e.owner] = False
    return out


def decorate_offers(manager: RenterManager, rows: list[dict]) -> list[dict]:
    hl = health_log(manager)
    known = {s.provider_url: s.provider_address for s in manager.store.list()}
    urls: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for row in rows:  # one sample per provider (rows repeat it once per shape)
        url, address = row["provider_url"], _address_of(row, known, hl)
        if url in seen:
            continue
        seen.add(url)
        urls[address or url].append(url)  # no address yet: its probes count by URL
        hl.record(url, bool(row.get("healthy")), address=address,
                  latency_ms=row.get("latency_ms"), free_slots=row.get("free_session_slots"),
                  version=row.get("version"), error=row.get("error"))
    evidence = gather(manager.store.list(), hl, manager.ledger, dict(urls))
    checks, attested = _last_checks(manager), _attested(manager)
    for row in rows:
        address = _address_of(row, known, hl)
        e = evidence.get(address or row["provider_url"])
        ok, failed = hl.uptime(row["provider_url"])
        row["reliability"] = reliability(e) if e is not None else None
        row["verified"] = checks.get(address) if address else None
        row["attested"] = attested.get(address, False) if address else False
        row["uptime_pct"] = round(100 * ok / (ok + failed), 1) if ok + failed else None
        row["evidence"] = e.to_json() if e is not None else None
        if not row.get("healthy"):
            last = hl.last_ok(row["provider_url"])
            row["last_seen"] = last["at"] if last else None
    return rows


def provider_reputation(manager: RenterManager) -> list[dict]:
    """One row per provider the renter has records or probes of, for the history view."""
    hl = health_log(manager)
    urls: dict[str, list[str]] = defaultdict(list)
    for s in manager.store.list():
        if s.provider_url not in urls[s.provider_address]:
            urls[s.provider_address].append(s.provider_url)
    evidence = gather(manager.store.list(), hl, manager.ledger, dict(urls))
    return [{"provider_address": a, "provider_urls": urls.get(a, []),
             "reliability": reliability(e), "evidence": e.to_json()}
            for a, e in evidence.items()]
