"""Renter-signed HTTP requests.

Every call a renter makes to a provider's API carries five headers:

    X-Walnut-Public-Key   hex of the renter's 32-byte Ed25519 public key
    X-Walnut-Timestamp    integer Unix seconds when the request was signed
    X-Walnut-Nonce        32 hex characters, fresh per request
    X-Walnut-Audience     the provider the request is for (below)
    X-Walnut-Signature    hex Ed25519 signature over the canonical bytes below

    b"walnut-request-v2\n" METHOD "\n" PATH_AND_QUERY "\n" TIMESTAMP "\n" NONCE "\n"
    AUDIENCE "\n" SHA256_HEX(BODY)

The provider refuses a request outside its timestamp window or whose nonce it has already
seen inside that window, so a captured request cannot be replayed to it.  The audience stops
a provider from replaying a request it received to another provider: over HTTPS it is the
SHA-256 fingerprint of the pinned certificate the renter connected to (a provider cannot
present another's certificate), on plain HTTP (loopback only) the provider address from its
status.  The renter's identity is the Sui address of the public key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping

from .errors import Unauthorized
from .keys import KeyPair, sui_address, verify
from .numbers import NumberError, parse_int
from .protocol import HEADER_AUDIENCE, HEADER_KEY, HEADER_NONCE, HEADER_SIG, HEADER_TS

DOMAIN = b"walnut-request-v2"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_AUDIENCE = re.compile(r"^[0-9a-zA-Z]{1,80}$")  # a fingerprint or a 0x address


class SignatureError(Unauthorized):
    """A signed request was refused (401); the message says why, without secrets."""


def canonical_bytes(method: str, path: str, timestamp: str, nonce: str, body: bytes,
                    audience: str = "") -> bytes:
    body_hash = hashlib.sha256(body or b"").hexdigest()
    return b"\n".join(
        [DOMAIN, method.upper().encode(), path.encode(), timestamp.encode(), nonce.encode(),
         audience.encode(), body_hash.encode()]
    )


def sign_request(
    key: KeyPair, method: str, path: str, body: bytes = b"", *, audience: str = "",
    now: float | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request (`path` includes any query string) to the
    provider named by `audience` (its pinned certificate fingerprint, or its address)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    audience = audience.lower()
    signature = key.sign(canonical_bytes(method, path, timestamp, nonce, body, audience))
    return {
        HEADER_KEY: key.public_key.hex(),
        HEADER_TS: timestamp,
        HEADER_NONCE: nonce,
        HEADER_AUDIENCE: audience,
        HEADER_SIG: signature.hex(),
    }


class ReplayCache:
    """Nonces seen inside the timestamp window; bounded so it cannot grow without limit."""

    def __init__(self, window_s: int, max_entries: int = 200_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, key: str, now: float) -> bool:
        """False when `key` was already used within the window."""
        with self._lock:
            horizon = now - 2 * self.window_s
            while self._seen:
                oldest_key, seen_at = next(iter(self._seen.items()))
                if seen_at >= horizon and len(self._seen) < self.max_entries:
                    break
                self._seen.pop(oldest_key)
            if key in self._seen:
                return False
            self._seen[key] = now
            return True


class RequestVerifier:
    def __init__(self, window_s: int = 60) -> None:
        self.window_s = window_s
        self.replays = ReplayCache(window_s)

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes,
        *, audience: str | None = None, now: float | None = None,
    ) -> str:
        """The renter's Sui address, or SignatureError saying what is wrong.

        `audience`: this provider's own; a request signed for another one is refused.
        None skips that check (for callers that verify the signature alone)."""
        now = time.time() if now is None else now
        required = (HEADER_KEY, HEADER_TS, HEADER_NONCE, HEADER_SIG)
        missing = [h for h in required if not headers.get(h)]
        if missing:
            raise SignatureError(f"missing signature header(s): {', '.join(missing)}")
        public_key = headers[HEADER_KEY].strip().lower()
        timestamp = headers[HEADER_TS].strip()
        nonce = headers[HEADER_NONCE].strip().lower()
        signature = headers[HEADER_SIG].strip().lower()
        named = (headers.get(HEADER_AUDIENCE) or "").strip().lower()
        if not _HEX64.match(public_key):
            raise SignatureError(f"{HEADER_KEY} must be 64 hex characters")
        try:
            signed_at = parse_int(timestamp, HEADER_TS, maximum=10**12)
        except NumberError as exc:
            raise SignatureError(f"{HEADER_TS} must be integer Unix seconds") from exc
        if not _NONCE.match(nonce):
            raise SignatureError(f"{HEADER_NONCE} must be 32 hex characters")
        if not _HEX128.match(signature):
            raise SignatureError(f"{HEADER_SIG} must be 128 hex characters")
        if named and not _AUDIENCE.match(named):
            raise SignatureError(f"{HEADER_AUDIENCE} must be a certificate fingerprint or an "
                                 "address")
        if audience is not None and named != audience.lower():
            raise SignatureError(
                f"request signed for another provider ({HEADER_AUDIENCE} "
                f"{named[:18] or 'missing'}...), not this one ({audience.lower()[:18]}...)")
        if abs(now - signed_at) > self.window_s:
            raise SignatureError(
                f"request timestamp is outside the {self.window_s}s window (check your clock)"
            )
        message = canonical_bytes(method, path, timestamp, nonce, body, named)
        pk = bytes.fromhex(public_key)
        if not verify(pk, bytes.fromhex(signature), message):
            raise SignatureError("bad request signature")
        if not self.replays.check_and_add(public_key + nonce, now):
            raise SignatureError("replayed request refused")
        return sui_address(pk)
