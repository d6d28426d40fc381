"""Away mode (issue #17): a session that keeps running while its renter is offline.

Before leaving (and again as its regular vouchers advance) the renter signs a ladder of
*away vouchers*: cumulative amounts above what it already paid, up to paid + its away
budget, and sends them with how long it will be away. While that lasts, the provider counts
the ladder's top as paid, so the session runs with no regular voucher arriving, until its
metered cost reaches the top ("the away budget is used up") or the away time ends.

Trust bound: the provider can never claim more than the ladder's top, which the renter chose;
an honest provider claims the rung that covers its metered cost (at most one rung above it),
and when the renter returns its regular vouchers catch up and the provider claims exactly
the metered cost. Rungs are never shown back to the renter (they are money).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..common.errors import BadRequest
from ..common.numbers import parse_int
from ..common.protocol import MAX_AWAY_S, MIN_AWAY_S
from ..ledger.vouchers import parse_voucher_fields, verify_voucher
from .store import SessionRecord

MAX_RUNGS = 512  # per request and held: the renter signs at most 256 (renter/away.py)


@dataclass(frozen=True)
class AwayRequest:
    seconds: int
    rungs: tuple[tuple[int, bytes], ...]  # ascending cumulative amounts and signatures


def parse_away_request(body: object) -> AwayRequest:
    """`{"seconds": N, "vouchers": [{"amount_mist", "signature"}, ...]}`, or 400."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    extra = sorted(set(body) - {"seconds", "vouchers"})
    if extra:
        raise BadRequest(f"unknown field: {extra[0]}")
    seconds = parse_int(body.get("seconds"), "seconds")
    if not MIN_AWAY_S <= seconds <= MAX_AWAY_S:
        raise BadRequest(f"seconds: must be between {MIN_AWAY_S} and {MAX_AWAY_S}")
    vouchers = body.get("vouchers")
    if not isinstance(vouchers, list) or not 1 <= len(vouchers) <= MAX_RUNGS:
        raise BadRequest(f"vouchers: must be a list of 1 to {MAX_RUNGS} vouchers")
    rungs = tuple(parse_voucher_fields(v, f"vouchers[{i}].") for i, v in enumerate(vouchers))
    amounts = [a for a, _ in rungs]
    if any(b <= a for a, b in zip(amounts, amounts[1:], strict=False)):
        raise BadRequest("vouchers: amounts must be strictly ascending")
    return AwayRequest(seconds, rungs)


def check_rungs(rec: SessionRecord, rungs: tuple[tuple[int, bytes], ...]) -> None:
    """Every rung signed by the session's renter for its channel, within its deposit, above
    the ladder already held; else 400 and nothing is kept."""
    held = held_rungs(rec)
    floor = held[-1][0] if held else rec.voucher_mist
    key = bytes.fromhex(rec.renter_public_key)
    for i, (amount, sig) in enumerate(rungs):
        if amount <= floor:
            raise BadRequest(f"vouchers[{i}]: {amount} MIST is not above the {floor} MIST "
                             "already signed")
        if amount > rec.deposit_mist:
            raise BadRequest(f"vouchers[{i}]: {amount} MIST exceeds the deposit of "
                             f"{rec.deposit_mist} MIST")
        if not verify_voucher(key, rec.channel_id, amount, sig):
            raise BadRequest(f"vouchers[{i}]: signature is not valid for this channel "
                             "and amount")


def held_rungs(rec: SessionRecord) -> list[tuple[int, bytes]]:
    """The away vouchers the provider holds, ascending."""
    if not rec.away_vouchers:
        return []
    return [(int(a), bytes.fromhex(s)) for a, s in json.loads(rec.away_vouchers)]


def merged_ladder(rec: SessionRecord, rungs: tuple[tuple[int, bytes], ...]) -> str:
    """The held ladder with new rungs on top, less those the regular voucher covers."""
    keep = [(a, s) for a, s in held_rungs(rec) + list(rungs) if a > rec.voucher_mist]
    if len(keep) > MAX_RUNGS:
        raise BadRequest(f"vouchers: at most {MAX_RUNGS} away vouchers are held; "
                         "turn away off first")
    return json.dumps([[a, s.hex()] for a, s in keep])


def best_voucher(rec: SessionRecord, cost: int, settling: bool) -> tuple[int, bytes] | None:
    """The voucher to claim for `cost`: the regular one when it covers it; else, at the end,
    the smallest rung that covers it (or the top one), while running the largest rung at
    most `cost` (never more than was metered); else the regular one."""
    regular = (rec.voucher_mist, bytes.fromhex(rec.voucher_signature)) \
        if rec.voucher_signature else None
    if regular is not None and regular[0] >= cost:
        return regular
    rungs = held_rungs(rec)
    if settling:
        covering = [r for r in rungs if r[0] >= cost]
        pick = covering[0] if covering else (rungs[-1] if rungs else None)
    else:
        below = [r for r in rungs if r[0] <= cost]
        pick = below[-1] if below else None
    if pick is None or (regular is not None and pick[0] <= regular[0]):
        return regular
    return pick
