"""Amounts of SUI as people read and type them, from and to integer MIST, exactly (no float
on the way: 2**53 MIST is only about 9 million SUI). One text form for every CLI and log:
thousands separated, trailing zeros trimmed, the unit named: `1,234.5 SUI`, `0.000000001 SUI`,
`0 SUI`."""

from __future__ import annotations

MIST_PER_SUI = 1_000_000_000
DECIMALS = 9


def format_sui(mist: int) -> str:
    """`1,234.5 SUI` from integer MIST."""
    mist = int(mist)
    sign = "-" if mist < 0 else ""
    whole, frac = divmod(abs(mist), MIST_PER_SUI)
    text = f"{sign}{whole:,}"
    if frac:
        text += "." + f"{frac:0{DECIMALS}d}".rstrip("0")
    return f"{text} SUI"


def parse_sui(text: str) -> int:
    """Exact MIST from a SUI amount such as '1.5', '12,345.6 SUI' or '0.000000001'."""
    text = text.strip().replace("_", "").replace(",", "")
    if text.lower().endswith("sui"):
        text = text[:-3].strip()
    whole, _, frac = text.partition(".")
    if not (whole or frac) or not (whole or "0").isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not an amount of SUI: {text!r}")
    if len(frac) > DECIMALS:
        raise ValueError("SUI has 9 decimal places (1 MIST = 0.000000001 SUI)")
    return int(whole or "0") * MIST_PER_SUI + int(frac.ljust(DECIMALS, "0") or "0")
