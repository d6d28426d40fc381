"""What a provider may answer: one JSON schema per API response the renter reads, with
size bounds, and the body cap. The provider is a counterparty: a response that does not fit
is refused as a whole (`InvalidResponse`), never half-used.

`ProviderClient._call` reads every body through `BodyLimit` and hands it to `validate`.
Integers are Python ints only (JSON `1.0` is not a count of MIST), within u64.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator, validators

from .errors import BadGateway
from .numbers import U64_MAX, bounded_json_int
from .protocol import JOB_ID_PATTERN, SESSION_ID_PATTERN

MAX_RESPONSE_BYTES = 2 * 1024 * 1024  # a status with 256 shapes is ~100 KiB

U64 = {"type": "integer", "minimum": 0, "maximum": U64_MAX}
COUNT = {"type": "integer", "minimum": 0, "maximum": 2**31}
SECONDS = {"type": "number", "minimum": 0, "maximum": 1e12}
TIMESTAMP = {"type": ["number", "null"], "minimum": 0, "maximum": 1e12}


def text(max_length: int = 256, *, nullable: bool = False, min_length: int = 0) -> dict:
    return {"type": ["string", "null"] if nullable else "string", "minLength": min_length,
            "maxLength": max_length}


def obj(required: dict[str, dict], optional: dict[str, dict] | None = None,
        max_properties: int = 64) -> dict:
    """An object with these fields; others may come (newer providers) but count in size."""
    return {"type": "object", "maxProperties": max_properties, "required": sorted(required),
            "properties": {**required, **(optional or {})}}


def array(items: dict, max_items: int) -> dict:
    return {"type": "array", "maxItems": max_items, "items": items}  # size checked first


ADDRESS = {"type": "string", "pattern": "^0x[0-9a-f]{64}$"}
HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
SMALL_MAP = {"type": "object", "maxProperties": 64,
             "additionalProperties": {"type": ["number", "string", "boolean", "null"],
                                      "maxLength": 1024}}

SHAPE = obj({
    "name": text(128, min_length=1), "gpus": {**COUNT, "maximum": 1024},
    "cpus": {"type": "number", "exclusiveMinimum": 0, "maximum": 100_000},
    "memory_mb": COUNT, "price_mist_per_second": U64, "price_mist_per_hour": U64,
    "gpu_model": text(nullable=True), "gpu_memory_mb": {**COUNT, "type": ["integer", "null"]},
    "available": {"type": "boolean"},
})

HEALTH = obj({"status": text(32)}, {"version": text(64), "node": text(128)})

STATUS = obj({
    "node": text(128, min_length=1), "provider_address": ADDRESS,
    "provider_public_key": HEX64, "region": text(128), "runtime": text(64),
    "capacity": obj({"free_session_slots": COUNT}, max_properties=32),
    "shapes": array(SHAPE, 256),
    "images": array(obj({"name": text(128, min_length=1)},
                        {"description": text(1024, nullable=True)}), 256),
    "max_session_seconds": {**U64, "minimum": 1},
}, {
    "version": text(64, nullable=True), "endpoint": text(2048, nullable=True),
    "tls_fingerprint": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
    "hardware": {"type": "object", "maxProperties": 64, "properties": {
        "gpus": array(obj({"uuid": text(128)}), 64)}},  # the check compares them
    "settlement": obj({}, {"min_prepaid_seconds": U64, "min_challenge_period_s": U64,
                           "grace_seconds": U64, "ledger": text(64),
                           "bills_install": {"type": "boolean"}}, max_properties=32),
    "uptime_seconds": U64,
})

# a session's requirements being prepared (issue #15, contract C4); the texts are shown
ENVIRONMENT = obj({"state": {"enum": ["none", "resolving", "downloading", "installing", "ready",
                                      "cached", "failed"]}}, {
    "step": text(1024, nullable=True), "done": {**COUNT, "type": ["integer", "null"]},
    "total": {**COUNT, "type": ["integer", "null"]},
    "requirements_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{1,128}$"},
    "error": text(16384, nullable=True),
}, max_properties=16)

SESSION = obj({
    "id": {"type": "string", "pattern": f"^{SESSION_ID_PATTERN}$"},
    "status": {"enum": ["starting", "running", "stopped", "failed"]},
    "reason": text(4096), "running_seconds": U64, "cost_mist": U64,
}, {
    "shape": text(128), "image": text(1024), "gpus": array(COUNT, 1024),
    "cpus": {"type": "number", "minimum": 0, "maximum": 100_000}, "memory_mb": COUNT,
    "price_mist_per_second": U64, "max_seconds": U64, "runtime": text(64),
    "channel_id": text(128, nullable=True), "created_at": TIMESTAMP, "started_at": TIMESTAMP,
    "ended_at": TIMESTAMP, "extra": {"type": "object", "maxProperties": 64},
    "usage": SMALL_MAP, "environment": {**ENVIRONMENT, "type": ["object", "null"]},
    # the channel's money (common/models.py ProviderMoney); a newer provider may name
    # more settlement states
    "settlement": {"type": "string", "pattern": "^[a-z_]{1,32}$"}, "deposit_mist": U64,
    "voucher_mist": U64, "claimed_mist": U64, "refunded_mist": U64, "lost_mist": U64,
    "claimed_at": TIMESTAMP,
    # idle auto-stop (issue #17): the provider's idle clock of a running session
    "idle": {"type": ["object", "null"], "maxProperties": 16, "properties": {
        "idle_s": U64, "threshold_s": U64, "stop_in_s": {**U64, "type": ["integer", "null"]},
        "connections": U64}},
})

SESSION_CREATED = {**SESSION, "required": sorted([*SESSION["required"], "access_token"]),
                   "properties": {**SESSION["properties"],
                                  "access_token": text(512, min_length=16),
                                  "gateway_path": text(512)}}

JOB = obj({
    "id": {"type": "string", "pattern": f"^{JOB_ID_PATTERN}$"},
    "status": {"type": "string", "pattern": "^[a-z_]{1,32}$"},  # starting, collecting, ...
    "cell": COUNT, "cells": COUNT, "elapsed_s": SECONDS, "error": text(8192),
    "retryable": {"type": "boolean"},
}, {
    "cost_mist": U64, "paid_mist": U64, "metrics": SMALL_MAP, "result_bytes": U64,
    "digest": text(128, nullable=True), "outputs_digest": text(128, nullable=True),
    "signature": text(256, nullable=True),
})

_SID, _JID = SESSION_ID_PATTERN, JOB_ID_PATTERN
# (method, path under /api/v1) -> (what, schema); the first match wins
ROUTES: list[tuple[str, re.Pattern, str, dict]] = [
    (method, re.compile(path), what, schema) for method, path, what, schema in [
        ("GET", r"/health", "health answer", HEALTH),
        ("GET", r"/status", "status", STATUS),
        ("POST", r"/sessions", "session", SESSION_CREATED),
        ("GET", r"/sessions", "session list", obj({"sessions": array(SESSION, 10_000)})),
        ("GET", rf"/sessions/{_SID}", "session", SESSION),
        ("DELETE", rf"/sessions/{_SID}", "session", SESSION),
        ("PATCH", rf"/sessions/{_SID}", "session", SESSION),
        ("POST", rf"/sessions/{_SID}/vouchers", "voucher receipt", SESSION),
        ("POST", rf"/sessions/{_SID}/topup", "session", SESSION),
        ("POST", rf"/sessions/{_SID}/jobs", "job", JOB),
        ("GET", rf"/sessions/{_SID}/jobs/{_JID}", "job", JOB),
        ("DELETE", rf"/sessions/{_SID}/jobs/{_JID}", "job", JOB),
    ]
]


def _strict_integer(checker, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer))
_validators = {id(schema): StrictValidator(schema) for *_, schema in ROUTES}


class InvalidResponse(BadGateway):
    """The provider's answer does not fit its schema (502); the message says what and why."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"provider sent an invalid {what}: {reason}")


class BodyLimit:
    """A streaming_callback that keeps at most `limit` bytes and then aborts the read."""

    def __init__(self, limit: int = MAX_RESPONSE_BYTES) -> None:
        self.limit = limit
        self.exceeded = False
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.limit:
            self.exceeded = True
            self._chunks.clear()
            raise InvalidResponse("response", f"body over {self.limit} bytes")  # ends the read
        self._chunks.append(chunk)

    def check(self) -> None:
        if self.exceeded:
            raise InvalidResponse("response", f"body over {self.limit} bytes")

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def decode(body: bytes) -> Any:
    """The body as JSON, or InvalidResponse (not JSON, NaN, nested past the parser)."""
    try:
        return json.loads(body or b"null", parse_int=bounded_json_int,
                          parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
        raise InvalidResponse("response", reason) from exc


def route_of(method: str, path: str) -> tuple[str, dict] | None:
    for m, pattern, what, schema in ROUTES:
        if m == method and pattern.fullmatch(path):
            return what, schema
    return None


def validate(method: str, path: str, payload: Any) -> Any:
    """`payload` if it fits the schema of this call (`path` under /api/v1, no query);
    calls without one (a newer endpoint) pass as decoded, still bounded by the body cap."""
    route = route_of(method, path)
    if route is None:
        return payload
    what, schema = route
    try:
        # the first error, not the best: a hostile body can hold a million of them
        error = next(_validators[id(schema)].iter_errors(payload), None)
    except RecursionError:  # deeper than the validator recurses: no honest answer is
        raise InvalidResponse(what, "nested too deeply") from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "body"
        raise InvalidResponse(what, f"{where}: {error.message[:200]}")
    return payload
