"""One parser for every integer that comes from outside: HTTP bodies, query strings,
headers and command-line flags.

An integer is a JSON int, or a string of ASCII digits (money is sent as a decimal string
so it keeps its precision past 2**53), within a bounded range (u64 by default). Never a
float, a bool, a sign, spaces, hex, exponents or non-ASCII digits: `"²".isdigit()` and
`int("١٢")` both accept what a person would not call a number.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import BadRequest

U64_MAX = 2**64 - 1
MAX_DIGITS = 20  # len(str(U64_MAX)); longer inputs are refused before int() sees them
MAX_SECONDS = 10**12  # durations: far beyond any session, and inside SQLite's signed int64


class NumberError(BadRequest, ValueError):
    """A field that is not an acceptable integer (400); `message` names the field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{field}: {reason}")


class _OversizedInt:
    """A JSON number with too many digits, left unparsed so the field can be named."""


def bounded_json_int(text: str) -> int | _OversizedInt:
    return _OversizedInt() if len(text) > MAX_DIGITS + 1 else int(text)


def loads_json(data: bytes | str) -> Any:
    """json.loads, except that huge integers reach the field check instead of failing the
    whole body (Python refuses ints over 4300 digits with a message naming no field)."""
    return json.loads(data, parse_int=bounded_json_int)


def parse_int(value: object, field: str, *, minimum: int = 0, maximum: int = U64_MAX) -> int:
    """`value` as an int in [minimum, maximum], or NumberError naming `field`."""
    expected = (f"must be a positive integer (1 to {maximum})" if minimum == 1 else
                f"must be an integer from {minimum} to {maximum}")
    if isinstance(value, bool) or value is None:
        raise NumberError(field, expected)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        if len(value) > MAX_DIGITS:
            raise NumberError(field, f"{expected} (at most {MAX_DIGITS} digits)")
        if not value or not value.isascii() or not value.isdigit():
            raise NumberError(field, f"{expected}, written with the digits 0-9 only")
        number = int(value)
    elif isinstance(value, _OversizedInt):
        raise NumberError(field, f"{expected} (at most {MAX_DIGITS} digits)")
    else:
        raise NumberError(field, expected)
    if not minimum <= number <= maximum:
        raise NumberError(field, expected)
    return number


def optional_int(data: Mapping[str, Any], field: str, default: int | None = None, *,
                 minimum: int = 0, maximum: int = U64_MAX) -> int | None:
    """The field of a JSON object, `default` when it is absent or null."""
    value = data.get(field)
    if value is None:
        return default
    return parse_int(value, field, minimum=minimum, maximum=maximum)


_DURATION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,3})?")


def parse_duration(value: str, field: str, *, maximum: float = MAX_SECONDS) -> float:
    """Seconds typed by a person, e.g. "0.3": ASCII digits, at most three decimals, > 0.
    Only for durations; amounts and counts are integers (parse_int)."""
    if not value.isascii() or not _DURATION.fullmatch(value) or not 0 < float(value) <= maximum:
        raise NumberError(field, f"must be a number of seconds like 0.5 or 10, up to {maximum}")
    return float(value)


def cli_duration(field: str, *, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return parse_duration(text, field, maximum=maximum)
        except NumberError as exc:
            raise argparse.ArgumentTypeError(exc.message) from exc

    return parse


def cli_int(field: str, *, minimum: int = 0, maximum: int = U64_MAX
            ) -> Callable[[str], int]:
    """An argparse `type=` with the same rules; argparse reports the message."""

    def parse(text: str) -> int:
        try:
            return parse_int(text, field, minimum=minimum, maximum=maximum)
        except NumberError as exc:
            raise argparse.ArgumentTypeError(exc.message) from exc

    return parse
