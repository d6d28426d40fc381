"""Each Walnut kernel's link to its provider, as this Jupyter Server sees it now: "connected",
"reconnecting" while a lost connection (a reset, or keepalive pings unanswered in a silent
partition) is retried, or "dead". Kept in memory only: it is live state, not a record, and
the /walnut session view shows it as `kernel_links` ({local kernel id: state})."""

from __future__ import annotations

_STATES: dict[str, dict[str, str]] = {}  # session id -> local kernel id -> state


def set_state(session_id: str, kernel_id: str, state: str) -> None:
    _STATES.setdefault(session_id, {})[kernel_id] = state


def forget(session_id: str, kernel_id: str) -> None:
    kernels = _STATES.get(session_id, {})
    kernels.pop(kernel_id, None)
    if not kernels:
        _STATES.pop(session_id, None)


def of(session_id: str) -> dict[str, str]:
    return dict(_STATES.get(session_id, {}))
