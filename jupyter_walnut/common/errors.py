"""The one base of the failures Walnut reports to a person, whichever role raised it.

`status` is the HTTP status an API answers with: 4xx when the caller can fix the request,
5xx when the other side (502) or this node (503, 507) failed. The HTTP apps of both roles
turn any WalnutError into its status and message in one place (their base handler), so a
handler raises and never converts.
"""

from __future__ import annotations


class WalnutError(Exception):
    """A failure the user can read and act on: shown as one line (CLI) or a 4xx/5xx message
    (HTTP), never as a traceback."""

    status: int = 500  # a subclass names its own; `status=` overrides it for one error

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    @property
    def answer_status(self) -> int:
        """The status to answer an HTTP caller with (a relayed error may differ)."""
        return self.status if 400 <= self.status < 600 else 500


class StatusError(WalnutError):
    """A failure whose status is picked where it is raised: `Cls(status, message)`, the
    argument order of the role errors (RenterError, SessionError, ...) built on it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)


class BadRequest(WalnutError):
    status = 400


class Unauthorized(WalnutError):
    status = 401


class PaymentRequired(WalnutError):
    status = 402


class Forbidden(WalnutError):
    status = 403


class NotFound(WalnutError):
    status = 404


class Conflict(WalnutError):
    status = 409


class PayloadTooLarge(WalnutError):
    status = 413


class BadGateway(WalnutError):
    """The other side (a provider, a kernel gateway) failed or answered nonsense."""

    status = 502


class Unavailable(WalnutError):
    """This node cannot serve now (its ledger, its state file); trying again may work."""

    status = 503


class InsufficientStorage(WalnutError):
    status = 507
