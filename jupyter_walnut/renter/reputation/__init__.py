"""Provider reputation (issue #9): health probes, evidence and the reliability score.

`decorate_offers` is called by RenterManager.offers(): it records the health samples of the
offers just probed and adds to every row `reliability` (0-100 or None), `verified` (the
last session-start check on this provider: true, false or None), `uptime_pct`, `attested`
and `evidence`. The formula is in `score.py` and docs/pages/reputation.md. Evidence is
keyed on the provider's registered owner, not on the address its node reports
(`identity.py`).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING

from .evidence import gather
from .health import HealthLog
from .identity import Identities, identities
from .score import Evidence, reliability

if TYPE_CHECKING:
    from ..manager import RenterManager

log = logging.getLogger("walnut.reputation")

__all__ = ["Evidence", "HealthLog", "Identities", "decorate_offers", "health_log",
           "identities", "provider_reputation", "reliability"]

_logs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def health_log(manager: RenterManager) -> HealthLog:
    """The manager's health log, in its own renter.sqlite."""
    hl = _logs.get(manager)
    if hl is None:
        hl = _logs[manager] = HealthLog(manager.store.path)
    return hl


def _last_checks(manager: RenterManager, ids: Identities) -> dict[str, bool]:
    last: dict[str, bool] = {}
    for s in manager.store.list():  # newest first
        check = s.extra.get("verification")
        key = ids.key(s.provider_url, s.provider_address)
        if check is not None and key not in last:
            last[key] = bool(check.get("ok"))
    return last


def _verified_gflops(manager: RenterManager, ids: Identities
                     ) -> dict[tuple[str, str], tuple[float, int]]:
    """(provider, shape) -> (median GFLOP/s, checks): what this renter's own probe measured
    in the sessions it verified there and that passed (issue #21). A provider's claims and
    a failed check's figures never count."""
    seen: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in manager.store.list():
        check = s.extra.get("verification")
        if not isinstance(check, dict) or not check.get("ok"):
            continue
        gflops = (check.get("measured") or {}).get("gflops")
        if isinstance(gflops, int | float) and not isinstance(gflops, bool) and \
                math.isfinite(gflops) and gflops > 0:
            seen[(ids.key(s.provider_url, s.provider_address), s.shape)].append(float(gflops))
    return {k: (round(statistics.median(v), 1), len(v)) for k, v in seen.items()}


def _attested(manager: RenterManager) -> dict[str, bool]:
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
    ids = identities(manager)
    urls: dict[str, list[str]] = defaultdict(list)
    for row in rows:  # one sample per provider (rows repeat it once per shape)
        url = row["provider_url"]
        key = ids.key(url, row.get("provider_address"))
        if url in urls[key]:
            continue
        urls[key].append(url)
        hl.record(url, bool(row.get("healthy")), address=ids.owner(url, row.get(
                  "provider_address")), latency_ms=row.get("latency_ms"),
                  free_slots=row.get("free_session_slots"), version=row.get("version"),
                  error=row.get("error"))
    evidence = gather(manager.store.list(), hl, manager.ledger, dict(urls), ids)
    checks, attested = _last_checks(manager, ids), _attested(manager)
    measured = _verified_gflops(manager, ids)
    for row in rows:
        owner = ids.owner(row["provider_url"], row.get("provider_address"))
        key = owner or ids.key(row["provider_url"])
        e = evidence.get(key)
        ok, failed = hl.uptime(row["provider_url"])
        row["registered_owner"] = owner
        row["reliability"] = reliability(e) if e is not None else None
        row["verified"] = checks.get(key)
        row["attested"] = attested.get(owner, False) if owner else False
        row["uptime_pct"] = round(100 * ok / (ok + failed), 1) if ok + failed else None
        row["evidence"] = e.to_json() if e is not None else None
        gflops, n = measured.get((key, row.get("shape")), (None, 0))
        row["verified_gflops"], row["verified_checks"] = gflops, n
        if not row.get("healthy"):
            last = hl.last_ok(row["provider_url"])
            row["last_seen"] = last["at"] if last else None
    return rows


def provider_reputation(manager: RenterManager) -> list[dict]:
    """One row per provider the renter has records of, for the history view; keyed on the
    registered owner (or the URL of an unregistered provider)."""
    hl = health_log(manager)
    ids = identities(manager)
    urls: dict[str, list[str]] = defaultdict(list)
    for s in manager.store.list():
        key = ids.key(s.provider_url, s.provider_address)
        if s.provider_url not in urls[key]:
            urls[key].append(s.provider_url)
    evidence = gather(manager.store.list(), hl, manager.ledger, dict(urls), ids)
    return [{"provider_address": k if k.startswith("0x") else None, "provider_key": k,
             "provider_urls": urls.get(k, []), "reliability": reliability(e),
             "evidence": e.to_json()}
            for k, e in evidence.items()]
