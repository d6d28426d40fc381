"""The one base of the failures Walnut reports to a person, whichever role raised it."""

from __future__ import annotations


class WalnutError(Exception):
    """A failure the user can read and act on: shown as one line (CLI) or a 4xx/5xx message
    (HTTP), never as a traceback."""
