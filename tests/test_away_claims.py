"""Which voucher a provider claims for a session with an away ladder (issue #17), and what
it has lost when the renter closes the channel first: pure rules, no stack."""

from __future__ import annotations

import json

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger.base import Channel
from jupyter_walnut.ledger.vouchers import Voucher
from jupyter_walnut.provider.away import best_voucher
from jupyter_walnut.provider.settlement import ProviderSettlement
from jupyter_walnut.provider.store import SessionRecord

PRICE = 1000
KEY = KeyPair.generate()
CHANNEL = "0x" + "ab" * 32


def record(paid: int, rungs: list[int], metered_s: int) -> SessionRecord:
    def sig(amount: int) -> str:
        return Voucher.sign(KEY, CHANNEL, amount).signature.hex()

    return SessionRecord(
        id="s-0000000000000001", renter=KEY.address, renter_public_key=KEY.public_key.hex(),
        shape="cpu-small", image="python", gpus=[], cpus=1, memory_mb=512,
        price_mist_per_second=PRICE, max_seconds=3600, status="stopped", runtime="process",
        gateway_token="t", access_token_hash="h", created_at=0, channel_id=CHANNEL,
        deposit_mist=10**6, voucher_mist=paid, voucher_signature=sig(paid) if paid else None,
        away_vouchers=json.dumps([[a, sig(a)] for a in rungs]) if rungs else None,
        running_ms=metered_s * 1000)


def amount(pick) -> int | None:
    return pick[0] if pick else None


def test_a_returning_renter_pays_exactly_what_was_metered():
    rec = record(paid=50 * PRICE, rungs=[80 * PRICE, 110 * PRICE], metered_s=50)
    assert amount(best_voucher(rec, rec.cost_mist, settling=True)) == 50 * PRICE


def test_at_the_end_the_smallest_rung_covering_the_cost_is_claimed():
    rec = record(paid=50 * PRICE, rungs=[80 * PRICE, 110 * PRICE, 140 * PRICE], metered_s=95)
    assert amount(best_voucher(rec, rec.cost_mist, settling=True)) == 110 * PRICE
    # while running, never above what was metered
    assert amount(best_voucher(rec, rec.cost_mist, settling=False)) == 80 * PRICE


def test_a_cost_beyond_the_ladder_is_paid_by_its_top_and_no_more():
    rec = record(paid=50 * PRICE, rungs=[80 * PRICE, 110 * PRICE], metered_s=500)
    assert amount(best_voucher(rec, rec.cost_mist, settling=True)) == 110 * PRICE


def test_what_is_lost_when_the_renter_closes_first_counts_the_covering_rung():
    rec = record(paid=50 * PRICE, rungs=[80 * PRICE, 110 * PRICE], metered_s=95)
    settlement = ProviderSettlement.__new__(ProviderSettlement)  # the rule needs no ledger
    channel = Channel(channel_id=CHANNEL, renter=KEY.address, provider="0x1",
                      voucher_pubkey=KEY.public_key, deposited=10**6, claimed=50 * PRICE,
                      refunded=10**6 - 50 * PRICE, price_per_second_mist=PRICE,
                      challenge_period_ms=0, closed=True)
    facts = settlement.closed_without_claim(rec, channel)
    assert (facts["settlement"], facts["lost_mist"]) == ("lost", 60 * PRICE)
