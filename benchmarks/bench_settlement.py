"""Settlement figures: voucher throughput, local ledger throughput, on-chain cost.

Run: .venv/bin/python benchmarks/bench_settlement.py [--seconds 2]
Prints one table: figure, value, baseline, ratio (value / baseline). Not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.ledger import LocalLedger, Voucher
from jupyter_walnut.ledger.vouchers import verify_voucher

CHANNEL = "0x" + "ab" * 32
BILLING_INTERVAL_S = 1  # naive metering: one payment transaction per billing interval


def rate(fn, seconds: float) -> float:
    """Calls per second of `fn` over about `seconds` (single core)."""
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            fn()
        count += 100
    return count / (time.perf_counter() - start)


def voucher_rates(seconds: float) -> tuple[float, float]:
    key = KeyPair.generate()
    amounts = iter(range(1, 10**12))
    sign_rate = rate(lambda: Voucher.sign(key, CHANNEL, next(amounts)), seconds)
    voucher = Voucher.sign(key, CHANNEL, 12345)
    verify_rate = rate(
        lambda: verify_voucher(key.public_key, CHANNEL, 12345, voucher.signature), seconds
    )
    return sign_rate, verify_rate


def ledger_rates(seconds: float) -> tuple[float, float]:
    renter, provider, vkey = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    with tempfile.TemporaryDirectory() as tmp, LocalLedger(Path(tmp) / "l.sqlite") as led:
        led.fund(renter.address, 10**15)
        channel = led.open_channel(renter, provider.address, vkey.public_key, 10**14, 1, 60)
        amounts = iter(range(1, 10**14))
        vouchers = [
            Voucher.sign(vkey, channel.channel_id, next(amounts))
            for _ in range(int(15_000 * seconds) + 1000)
        ]
        it = iter(vouchers)

        def claim() -> None:
            v = next(it)
            led.claim(provider, v.channel_id, v.amount_mist, v.signature)

        claim_rate = rate(claim, seconds)
        open_rate = rate(
            lambda: led.open_channel(renter, provider.address, vkey.public_key, 1, 1, 60), seconds
        )
    return claim_rate, open_rate


def onchain_transactions(session_s: int) -> tuple[int, int]:
    """(walnut, naive) transactions for one session of `session_s` seconds.

    walnut: open + (claim and provider_close in one programmable transaction) = 2;
    3 on the recovery path (open, request_close, finalize_close).
    naive: open an account/escrow, then one payment per billing interval.
    """
    walnut = 2
    naive = 1 + -(-session_s // BILLING_INTERVAL_S)
    return walnut, naive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per rate figure")
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str]] = []
    sign_rate, verify_rate = voucher_rates(args.seconds)
    needed = 1.0  # one voucher per second per session at per-second billing
    rows.append(
        ("voucher sign /s/core", f"{sign_rate:,.0f}", f"{needed:.0f}", f"{sign_rate:,.0f}x")
    )
    rows.append(
        ("voucher verify /s/core", f"{verify_rate:,.0f}", f"{needed:.0f}", f"{verify_rate:,.0f}x")
    )
    claim_rate, open_rate = ledger_rates(args.seconds)
    rows.append(("local ledger claim /s", f"{claim_rate:,.0f}", "1", f"{claim_rate:,.0f}x"))
    rows.append(("local ledger open /s", f"{open_rate:,.0f}", "1", f"{open_rate:,.0f}x"))
    for label, seconds in [("1 min", 60), ("1 h", 3600), ("8 h", 8 * 3600), ("30 d", 30 * 86400)]:
        walnut, naive = onchain_transactions(seconds)
        rows.append(
            (f"on-chain tx/session {label}", str(walnut), f"{naive:,} (naive)",
             f"{walnut / naive:.2e}")
        )  # fmt: skip
    widths = [
        max(len(r[i]) for r in [("figure", "value", "baseline", "ratio"), *rows]) for i in range(4)
    ]
    header = ("figure", "value", "baseline", "ratio")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(
        "\nbaselines: rates vs the 1 voucher/s a per-second session needs; on-chain vs naive "
        f"metering with one payment transaction per {BILLING_INTERVAL_S} s billing interval "
        "(plus its opening). walnut's recovery path (renter closes alone) costs 3."
    )


if __name__ == "__main__":
    main()
