"""The renter's error, apart from manager.py: the launch's hardware check (verify/runner.py)
raises it too, and manager.py imports the runner."""

from __future__ import annotations

from ..common.errors import StatusError


class RenterError(StatusError):
    """A renter operation that cannot be done; `status` is the HTTP status to answer with."""
