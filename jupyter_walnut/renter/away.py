"""Away mode, the renter's side (issue #17): what to sign so a session keeps running while
this server is offline, without trusting the provider with more than the away budget.

The renter signs a ladder of vouchers above what it has paid, up to paid + budget (capped by
the deposit), one rung per `step` MIST; the provider counts the top as paid while the renter
is away (provider/away.py). While the renter is online its regular vouchers advance, and the
ladder is extended so its top stays paid + budget: at no time can the provider claim more
than `budget` beyond what was paid, which is the sentence the UI shows.
"""

from __future__ import annotations

from ..common.errors import BadRequest
from ..common.money import format_sui
from ..common.numbers import parse_int
from ..common.protocol import MAX_AWAY_S, MIN_AWAY_S

MAX_RUNGS = 256  # signed per ladder; the provider holds at most 512
STEP_SECONDS = 30  # a rung is at least this much of the price: the provider's usual grace


def step_mist(price_mist_per_second: int, budget_mist: int) -> int:
    """The rung size: an honest provider's claim rounds the metered cost up by at most it."""
    return max(1, price_mist_per_second * STEP_SECONDS, -(-budget_mist // MAX_RUNGS))


def rungs(above_mist: int, top_mist: int, step: int) -> list[int]:
    """Cumulative amounts from above `above_mist` up to `top_mist`, `step` apart, the top
    last (none when top is not above)."""
    out = list(range(above_mist + step, top_mist, step))
    return out + [top_mist] if top_mist > above_mist else []


def wanted_top(paid_mist: int, budget_mist: int, deposit_mist: int) -> int:
    return min(deposit_mist, paid_mist + budget_mist)


def parse_away(budget_mist: object, seconds: object) -> tuple[int, int]:
    """(budget, seconds) of an away request, or 400 naming the field."""
    budget = parse_int(budget_mist, "budget_mist")
    if budget <= 0:
        raise BadRequest("budget_mist: must be a positive number of MIST")
    secs = parse_int(seconds, "seconds")
    if not MIN_AWAY_S <= secs <= MAX_AWAY_S:
        raise BadRequest(f"seconds: must be between {MIN_AWAY_S} (1 min) and {MAX_AWAY_S} "
                         "(7 days)")
    return budget, secs


def parse_away_body(data: object, field: str = "") -> tuple[int, int]:
    """(budget, seconds) from `{"budget_mist": N, "seconds": S}` (a REST body, or its
    `field` of a launch), or 400."""
    if not isinstance(data, dict) or set(data) - {"budget_mist", "seconds"}:
        raise BadRequest(f'{field}give {{"budget_mist": N, "seconds": S}}')
    return parse_away(data.get("budget_mist"), data.get("seconds"))


def trust_bound(budget_mist: int) -> str:
    """The away switch's promise, in plain words."""
    return (f"While you are away, this provider can claim at most {format_sui(budget_mist)} "
            "beyond what you have already paid; when you come back you pay only what was "
            "metered.")


def away_view(s) -> dict | None:
    """A session's away mode as the sidebar and %walnut show it, or None when off."""
    if not s.away_budget_mist or s.away_until is None:
        return None
    return {"until": s.away_until, "budget_mist": s.away_budget_mist,
            "top_mist": s.away_top_mist,
            "claimable_mist": max(0, s.away_top_mist - s.voucher_mist),
            "trust_bound": trust_bound(s.away_budget_mist)}
