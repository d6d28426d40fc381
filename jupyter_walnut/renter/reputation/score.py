"""The reliability score: evidence in, one number out (0-100), or None without evidence.

Four rates, each Laplace-smoothed so a single observation cannot make a perfect or a
ruined provider, (good + 1) / (good + bad + 2):

    sessions      sessions the renter ended (or that ran to their limit) vs sessions the
                  provider ended early or failed to start
    verification  session-start checks passed vs failed
    uptime        health probes answered vs not (last 7 days)
    settlement    channels the provider settled itself vs channels the renter had to
                  recover after the challenge period (the provider vanished)

Each rate is weighted by its importance times its confidence n / (n + 2) (n: the number
of observations), so evidence that is plentiful counts more than evidence that is thin:

    score = 100 * sum(w_i * c_i * r_i) / sum(w_i * c_i)
    weights: sessions 3, verification 3, uptime 1, settlement 2

A failed verification is the strongest sign of a lying offer, so it also caps the score at
50 while it is among the provider's last three checks. No session, check or settled
channel yet: None ("no evidence"), never a made-up neutral figure; answering health
probes alone says nothing about how sessions go, so uptime only weighs in beside them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

WEIGHTS = {"sessions": 3.0, "verification": 3.0, "uptime": 1.0, "settlement": 2.0}
RECENT_FAILURE_CAP = 50.0


@dataclass
class Evidence:
    completed: int = 0  # sessions that ended as the renter meant
    ended_early: int = 0  # ended or failed by the provider's side
    verified_ok: int = 0
    verified_failed: int = 0
    recent_verification_failed: bool = False  # among the last three checks
    probes_ok: int = 0
    probes_failed: int = 0
    settled_by_provider: int = 0
    recovered_by_renter: int = 0
    claimed_mist: int = 0  # money facts, shown beside the score
    refunded_mist: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def _rate(good: int, bad: int) -> tuple[float, int]:
    return (good + 1) / (good + bad + 2), good + bad


def components(e: Evidence) -> dict[str, tuple[float, int]]:
    return {"sessions": _rate(e.completed, e.ended_early),
            "verification": _rate(e.verified_ok, e.verified_failed),
            "uptime": _rate(e.probes_ok, e.probes_failed),
            "settlement": _rate(e.settled_by_provider, e.recovered_by_renter)}


def reliability(e: Evidence) -> float | None:
    parts = components(e)
    if all(n == 0 for name, (_, n) in parts.items() if name != "uptime"):
        return None
    total = weight = 0.0
    for name, (rate, n) in parts.items():
        w = WEIGHTS[name] * n / (n + 2)
        total += w * rate
        weight += w
    if weight == 0:
        return None
    score = 100 * total / weight
    if e.recent_verification_failed:
        score = min(score, RECENT_FAILURE_CAP)
    return round(score, 1)
