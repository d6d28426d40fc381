"""The renter extension's route table: the handlers of handlers.py and those of
jobs_handlers.py and analytics_handlers.py, which build on handlers.py's base handler (so
the table that names them all lives here, not in handlers.py)."""

from __future__ import annotations

from ...common.protocol import SESSION_ID_PATTERN
from .analytics_handlers import analytics_handlers
from .drive_handlers import drive_handlers
from .handlers import (
    AwayHandler,
    FundHandler,
    OffersHandler,
    SessionHandler,
    SessionsHandler,
    StatusHandler,
    TopUpHandler,
    WalletHandler,
)
from .jobs_handlers import jobs_handlers
from .port_proxy import port_proxy_handlers
from .results_handlers import results_handlers
from .terminal_handlers import terminal_handlers
from .workspace_handlers import workspace_handlers


def handlers() -> list[tuple[str, type]]:
    sid = f"({SESSION_ID_PATTERN})"
    return [*jobs_handlers(), *analytics_handlers(), *results_handlers(sid),
        *terminal_handlers(sid), *port_proxy_handlers(sid), *drive_handlers(sid),
        *workspace_handlers(sid),
        (r"/walnut/offers", OffersHandler),
        (r"/walnut/sessions", SessionsHandler),
        (rf"/walnut/sessions/{sid}", SessionHandler),
        (r"/walnut/status", StatusHandler),
        (rf"/walnut/sessions/{sid}/topup", TopUpHandler),
        (rf"/walnut/sessions/{sid}/away", AwayHandler),
        (r"/walnut/wallet", WalletHandler),
        (r"/walnut/wallet/fund", FundHandler),
    ]
