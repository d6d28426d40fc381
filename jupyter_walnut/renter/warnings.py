"""Warnings before a session's end (issue #16), from the renter's own accounting: the time
since the renter saw it start, at the offer's price, against the budget it locked and the
duration it asked for. The provider's metered cost counts only when it is higher, so a
provider that under-reports cannot hide an end coming.

- `budget`: the spent share of the budget reached `warn_budget_fraction` (default 0.8);
- `ending`: the end (budget used up, or the maximum duration) is at most W seconds away, where
  W = min(warn_minutes_before_end minutes, a quarter of the session's whole length): a
  ten-minute session is warned 2.5 minutes before its end, a one-hour session 5 minutes.

Each is {"kind", "message", "seconds_left", "actions"}; actions are "top_up" (a budget end
can be pushed back) and "save_results".
"""

from __future__ import annotations

import time

from .store import RenterSession


def end_of(s: RenterSession, now: float | None = None) -> tuple[float, float, str] | None:
    """(seconds left, the session's whole length in seconds, "budget"|"duration") by the
    renter's own clock and the provider's figures where those are higher; None before it
    runs."""
    if s.status != "running" or not s.started_at:
        return None
    now = time.time() if now is None else now
    elapsed = max(now - s.started_at, float(s.running_seconds or 0))
    length, why = float(s.max_seconds or 0), "duration"
    price = s.price_mist_per_second
    budget = s.deposit_mist or s.budget_mist
    if price and budget and budget // price <= length:
        length, why = float(budget // price), "budget"
    if price:  # the provider's cost counts when it says more was spent
        elapsed = max(elapsed, (s.cost_mist or 0) / price)
    return max(0.0, length - elapsed), length, why


def session_warnings(s: RenterSession, *, budget_fraction: float = 0.8,
                     minutes_before_end: float = 5.0, now: float | None = None) -> list[dict]:
    end = end_of(s, now)
    if end is None:
        return []
    left, length, why = end
    out = []
    price, budget = s.price_mist_per_second, s.deposit_mist or s.budget_mist
    if price and budget:
        spent = min(budget, max((length - left) * price, s.cost_mist or 0))
        if spent >= budget_fraction * budget:
            out.append({"kind": "budget", "seconds_left": round(left),
                        "actions": ["top_up", "save_results"],
                        "message": f"{spent / budget:.0%} of this session's budget is used: "
                                   f"about {_human(left)} left. Top up to keep it running, "
                                   "or save your results."})
    window = min(minutes_before_end * 60, length / 4)
    if left <= window:
        cause = "its budget is used up" if why == "budget" else "its maximum duration"
        out.append({"kind": "ending", "seconds_left": round(left),
                    "actions": ["top_up", "save_results"] if why == "budget"
                    else ["save_results"],
                    "message": f"This session ends in about {_human(left)} ({cause}). "
                               "Its changed files are saved at the end; save them now to be "
                               "sure" + (", or top up to keep it running." if why == "budget"
                                         else ".")})
    return out


def _human(seconds: float) -> str:
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    return f"{s // 60} min" if s < 5400 else f"{s / 3600:.1f} h"
