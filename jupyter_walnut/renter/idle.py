"""Idle auto-stop, the renter's side (issue #17): the threshold a launch asks for, its
default by price, and the warning before the provider stops an idle session.

The default rule: the time that costs `idle_stop_cost_mist` (c.WalnutApp, default 0.05 SUI)
at the offer's price, clamped to [10 min, 3 h]. On the test offers, `gpu-1` at 50,000 MIST/s
stops after about 17 min idle and `cpu-small` at 1,000 MIST/s after 3 h: an expensive shape
stops sooner than a cheap one. `c.WalnutApp.idle_stop_minutes` (or a launch's
`idle_stop_minutes`) replaces the rule; 0 is never.

The provider's clock is the one that counts (it stops the session); the renter shows it as
last seen, less the time since.
"""

from __future__ import annotations

import math
import time

from .errors import RenterError
from .store import RenterSession

DEFAULT_COST_MIST = 50_000_000  # 0.05 SUI of idle time before a session stops
MIN_DEFAULT_S, MAX_DEFAULT_S = 600, 3 * 3600  # the default rule's clamp
MAX_MINUTES = 7 * 24 * 60  # what the provider accepts (a week)


def default_idle_stop_s(price_mist_per_second: int, cost_mist: int = DEFAULT_COST_MIST) -> int:
    """Seconds of idle time that cost `cost_mist` at this price, clamped to [10 min, 3 h]."""
    if price_mist_per_second <= 0:
        return MAX_DEFAULT_S
    return max(MIN_DEFAULT_S, min(MAX_DEFAULT_S, cost_mist // price_mist_per_second))


def parse_idle_minutes(value: object, field: str = "idle_stop_minutes") -> int | None:
    """Minutes as a person gives them (a number, or "off"/"never" = 0) as whole seconds;
    None when absent. A RenterError 400 naming `field` otherwise, before anything is paid."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("off", "never"):
            return 0
        try:
            value = float(text)
        except ValueError:
            raise RenterError(400, f"{field}: must be a number of minutes (0 or 'off': "
                                   "never)") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or not 0 <= value <= MAX_MINUTES:
        raise RenterError(400, f"{field}: must be a number of minutes from 0 (never) to "
                               f"{MAX_MINUTES}")
    seconds = round(value * 60)
    if value > 0 and seconds < 1:
        raise RenterError(400, f"{field}: {value} minutes is less than a second")
    return seconds


def human(seconds: float) -> str:
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    return f"{round(s / 60)} min" if s < 5400 else f"{s / 3600:.1f} h"


def quote_text(idle_stop_s: int) -> str:
    return f"stops after {human(idle_stop_s)} idle" if idle_stop_s else "never stops when idle"


def idle_now(s: RenterSession, now: float | None = None) -> dict | None:
    """The provider's idle status of a running session as last seen, aged to now."""
    seen = s.extra.get("idle")
    if s.status != "running" or not isinstance(seen, dict):
        return None
    now = time.time() if now is None else now
    age = max(0.0, now - float(seen.get("seen_at") or now))
    out = {"idle_s": int(seen.get("idle_s") or 0) + int(age),
           "threshold_s": int(seen.get("threshold_s") or 0), "stop_in_s": None}
    if seen.get("stop_in_s") is not None:
        out["stop_in_s"] = max(0, int(seen["stop_in_s"] - age))
    return out


def idle_warning(s: RenterSession, minutes_before: float, now: float | None = None
                 ) -> dict | None:
    """The warning once the idle stop is within min(minutes_before, half the threshold)."""
    idle = idle_now(s, now)
    if idle is None or idle["stop_in_s"] is None:
        return None
    window = min(minutes_before * 60, idle["threshold_s"] / 2)
    left = idle["stop_in_s"]
    if left > window:
        return None
    return {"kind": "idle", "seconds_left": left, "actions": ["keep_running"],
            "message": f"This session stops in {human(left)} if still idle (no cell has run "
                       f"for {human(idle['idle_s'])}); its changed files are saved. Keep it "
                       "running to start the idle clock again."}
