"""What a renter asks of the provider for a session, and how a refusal reads."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..common.errors import StatusError
from ..common.numbers import MAX_SECONDS, optional_int
from ..common.requirements import Requirements, parse_requirements


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

    @classmethod
    def from_json(cls, body: object) -> SessionRequest:
        if not isinstance(body, dict):
            raise SessionError(400, "request body must be a JSON object")
        allowed = {"image", "shape", "gpus", "cpus", "memory_mb", "max_seconds", "channel_id",
                   "requirements"}
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
                   requirements=requirements or None)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
