"""Gather a provider's evidence: the renter's own sessions and checks, the health log,
and settlement facts from the ledger (rows and events of the local ledger; a ledger that
cannot list them contributes nothing rather than a guess)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from ..store import ACTIVE, RenterSession
from .health import HealthLog
from .identity import Identities
from .score import Evidence

KeyOf = Callable[[RenterSession], str]

# reasons in which the provider's side ended a session the renter was still using
_PROVIDER_SIDE = ("provider", "gateway died", "lost")


def session_outcome(s: RenterSession) -> str | None:
    """'completed', 'early' (the provider's doing) or None (not evidence of either)."""
    if s.id.startswith("x-") or s.status in ACTIVE:
        return None  # a refused launch (e.g. full) or a session still running
    check = s.extra.get("verification")
    if check and not check.get("ok"):
        return None  # counted among the failed checks instead
    if s.status == "failed":
        return "early"
    reason = s.reason.lower()
    if "stopped by you" not in reason and any(w in reason for w in _PROVIDER_SIDE):
        return "early"
    return "completed"


def from_sessions(sessions: list[RenterSession], key_of: KeyOf) -> dict[str, Evidence]:
    """Evidence per provider (its reputation key) from the renter's records (newest first)."""
    out: dict[str, Evidence] = defaultdict(Evidence)
    checks: dict[str, list[bool]] = defaultdict(list)
    for s in sorted(sessions, key=lambda x: x.created_at, reverse=True):
        e = out[key_of(s)]
        outcome = session_outcome(s)
        if outcome == "completed":
            e.completed += 1
        elif outcome == "early":
            e.ended_early += 1
        check = s.extra.get("verification")
        if check is not None:
            ok = bool(check.get("ok"))
            checks[key_of(s)].append(ok)
            if ok:
                e.verified_ok += 1
            else:
                e.verified_failed += 1
    for address, results in checks.items():
        out[address].recent_verification_failed = not all(results[:3])
    return dict(out)


def settlement_facts(ledger, address: str | None, events: list[dict] | None,
                     channel_ids: set[str] = frozenset()) -> dict[str, int]:
    """Closed channels of this provider: who closed them, and the money claimed vs
    refunded. Local ledger only (rows + ChannelClosed events). `address`: the registered
    owner, whose channels all count; without one, only `channel_ids` (the renter's own
    channels to that URL), since a node's word about its address proves nothing."""
    facts = {"settled_by_provider": 0, "recovered_by_renter": 0, "claimed_mist": 0,
             "refunded_mist": 0}
    channels = getattr(ledger, "channels", None)
    if channels is None or events is None:
        return facts
    closed_by = {e.get("channel_id"): e.get("by") for e in events
                 if e.get("kind") == "ChannelClosed"}
    try:
        rows = channels(provider=address) if address else [
            ch for ch in channels() if ch.channel_id in channel_ids]
    except Exception:  # a ledger that refuses
        return facts
    for ch in rows:
        if not ch.closed:
            continue
        facts["claimed_mist"] += ch.claimed
        facts["refunded_mist"] += ch.refunded
        if closed_by.get(ch.channel_id) == "renter":
            facts["recovered_by_renter"] += 1
        else:
            facts["settled_by_provider"] += 1
    return facts


def ledger_events(ledger) -> list[dict] | None:
    events = getattr(ledger, "events", None)
    if events is None:
        return None
    try:
        return events(0)
    except Exception:  # a ledger that cannot list events: no settlement evidence
        return None


def gather(sessions: list[RenterSession], health: HealthLog, ledger,
           providers: dict[str, list[str]], ids: Identities) -> dict[str, Evidence]:
    """Evidence per provider key (see identity.py); `providers` maps each key to its URLs."""

    def key_of(s: RenterSession) -> str:
        return ids.key(s.provider_url, s.provider_address)

    by_key = from_sessions(sessions, key_of)
    channel_ids: dict[str, set[str]] = defaultdict(set)
    for s in sessions:
        if s.channel_id:
            channel_ids[key_of(s)].add(s.channel_id)
    registered = {e.owner for e in ids.entries}
    events = ledger_events(ledger)
    for key, urls in providers.items():
        e = by_key.setdefault(key, Evidence())
        for url in urls:
            ok, failed = health.uptime(url)
            e.probes_ok += ok
            e.probes_failed += failed
        owner = key if key in registered else None
        for name, value in settlement_facts(ledger, owner, events, channel_ids[key]).items():
            setattr(e, name, value)
    return by_key
