"""Tables that render as HTML in Jupyter and as aligned text in a terminal, and CSV that a
spreadsheet opens as text."""

from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from typing import Any, TextIO

# Cells a spreadsheet would run as a formula (OWASP, CSV injection); names, reasons and
# errors in an export come from providers.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Table:
    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                 title: str = "", highlight: int | None = None) -> None:
        self.columns = list(columns)
        self.rows = [["" if v is None else str(v) for v in r] for r in rows]
        self.title = title
        self.highlight = highlight  # index of a row to mark (e.g. the best run)

    def text(self) -> str:
        if not self.rows:
            return f"{self.title}\n(none)" if self.title else "(none)"
        widths = [max(len(c), *(len(r[i]) for r in self.rows))
                  for i, c in enumerate(self.columns)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
        out = [self.title] if self.title else []
        out += [line(self.columns).rstrip(), line(["-" * w for w in widths])]
        for i, r in enumerate(self.rows):
            out.append((line(r) + ("  <- best" if i == self.highlight else "")).rstrip())
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.text()

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left'>{esc(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr" + (" style='font-weight:bold'" if i == self.highlight else "") + ">"
            + "".join(f"<td style='text-align:left'>{esc(v)}</td>" for v in r) + "</tr>"
            for i, r in enumerate(self.rows))
        caption = f"<caption style='text-align:left'>{esc(self.title)}</caption>" \
            if self.title else ""
        if not self.rows:
            body = f"<tr><td colspan='{len(self.columns)}'>(none)</td></tr>"
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def mist(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def csv_cell(value: Any) -> Any:
    """`value`, with a text cell that starts like a formula prefixed by ' (OWASP)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeCSVWriter:
    """csv.writer whose text cells never start a formula."""

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row: Sequence[Any]) -> None:
        self._writer.writerow([csv_cell(v) for v in row])
