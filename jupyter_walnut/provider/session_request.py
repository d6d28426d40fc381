"""What a renter asks of the provider for a session, and how a refusal reads."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..common.errors import StatusError
from ..common.numbers import MAX_SECONDS, optional_int
from ..common.requirements import Requirements, parse_requirements

MAX_IDLE_STOP_S = 7 * 24 * 3600  # a threshold past a week is a mistake, not a choice


class SessionError(StatusError):
    """A request about sessions that cannot be honoured; `status` is the HTTP status."""


@dataclass(frozen=True)
class SessionRequest:
    image: str
    shape: str | None = None
    gpus: int | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    max_seconds: int | None = None
    channel_id: str | None = None
    # pip requirements to install before the session runs (issue #15): checked and
    # normalized by requirements.py; None or an empty set when there are none
    requirements: Requirements | None = None
    # idle auto-stop (issue #17, idle.py): seconds of idle kernels before the session
    # stops; 0 = never
    idle_stop_s: int = 0

    @classmethod
    def from_json(cls, body: object) -> SessionRequest:
        if not isinstance(body, dict):
            raise SessionError(400, "request body must be a JSON object")
        allowed = {"image", "shape", "gpus", "cpus", "memory_mb", "max_seconds", "channel_id",
                   "requirements", "idle_stop_s"}
        extra = sorted(set(body) - allowed)
        if extra:
            raise SessionError(400, f"unknown field: {extra[0]}")
        image = body.get("image")
        if not isinstance(image, str) or not image:
            raise SessionError(400, "image: required (a name from the provider's offer)")

        def opt_int(key: str, minimum: int, maximum: int) -> int | None:
            return optional_int(body, key, minimum=minimum, maximum=maximum)  # or a 400

        shape = body.get("shape")
        if shape is not None and not isinstance(shape, str):
            raise SessionError(400, "shape: must be a string")
        channel = body.get("channel_id")
        if channel is not None and not isinstance(channel, str):
            raise SessionError(400, "channel_id: must be a string")
        requirements = body.get("requirements")
        requirements = None if requirements is None else parse_requirements(requirements)
        return cls(image=image, shape=shape, gpus=opt_int("gpus", 0, 1024),
                   cpus=opt_int("cpus", 1, 1024), memory_mb=opt_int("memory_mb", 64, 2**40),
                   max_seconds=opt_int("max_seconds", 1, MAX_SECONDS), channel_id=channel,
                   requirements=requirements or None, idle_stop_s=parse_idle_stop_s(body))


def parse_idle_stop_s(body: dict) -> int:
    """`idle_stop_s` of a create or PATCH body: whole seconds, 0 (never) up to a week."""
    value = optional_int(body, "idle_stop_s", 0, minimum=0, maximum=MAX_IDLE_STOP_S)
    return value or 0


def parse_session_patch(body: object) -> int:
    """A PATCH of a running session: only its idle threshold may change (idle.py)."""
    if not isinstance(body, dict):
        raise SessionError(400, "request body must be a JSON object")
    extra = sorted(set(body) - {"idle_stop_s"})
    if extra:
        raise SessionError(400, f"unknown field: {extra[0]}")
    if "idle_stop_s" not in body:
        raise SessionError(400, "idle_stop_s: required (seconds, 0 = never)")
    return parse_idle_stop_s(body)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
