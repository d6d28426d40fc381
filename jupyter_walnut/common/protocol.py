"""The wire protocol renter and provider both speak, defined once: the API prefix, header
names, the audience rule, the kernel websocket's URL, subprotocols and size limit, and the
frames of a resumable kernel link (provider/links.py holds the provider's side, the renter's
kernel bridge the other)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

API = "/api/v1"  # every provider route lives under it
SESSION_ID_PATTERN = r"s-[0-9a-f]{16}"  # a provider's session id; the renter keeps it too
JOB_ID_PATTERN = r"j-[0-9a-f]{16}"  # a provider's job id

# --- signed requests (common/signed_requests.py) -----------------------------------------
HEADER_KEY = "X-Walnut-Public-Key"
HEADER_TS = "X-Walnut-Timestamp"
HEADER_NONCE = "X-Walnut-Nonce"
HEADER_AUDIENCE = "X-Walnut-Audience"
HEADER_SIG = "X-Walnut-Signature"


def audience(tls_fingerprint: str | None, provider_address: str) -> str:
    """Whom a signed request is for (`X-Walnut-Audience`): the fingerprint of the provider's
    certificate over HTTPS, on plain HTTP (loopback only) its provider address."""
    return (tls_fingerprint or provider_address).lower()


# --- a session's kernel gateway, behind the provider's proxy -----------------------------

def gateway_path(session_id: str) -> str:
    return f"{API}/sessions/{session_id}/gateway"


def token_auth(token: str) -> dict[str, str]:
    """The header carrying a session's (or a gateway's) access token; never in the URL."""
    return {"Authorization": f"token {token}"}


def kernel_channels_path(kernel_id: str) -> str:
    return f"api/kernels/{kernel_id}/channels"


JUPYTER_V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"
MAX_MESSAGE_SIZE = 256 * 1024 * 1024  # one websocket frame, on every hop
# away mode (issue #17): how long a renter may say it will be away, on both sides
MIN_AWAY_S = 60
MAX_AWAY_S = 7 * 24 * 3600

# --- resumable kernel links (`walnut.resume.v1`) -----------------------------------------
# data frame (binary, both directions):  8-byte big-endian sequence number || v1 frame
# control frame (text, both directions): {"ack": N, "link": "<link instance>"}
RESUME_SUBPROTOCOL = "walnut.resume.v1"
LINK_ID_QUERY = "session_id"  # the renter's name for the link, stable across reconnects
LINK_ID_PATTERN = r"[0-9a-f]{32}"
LINK_ACK_QUERY = "walnut_ack"  # the last sequence number the renter got
SEQ = struct.Struct(">Q")


def data_frame(seq: int, payload: bytes) -> bytes:
    return SEQ.pack(seq) + payload


def parse_data_frame(frame: bytes) -> tuple[int, bytes] | None:
    """(sequence number, payload), or None for a frame too short to carry one."""
    if len(frame) < SEQ.size:
        return None
    return SEQ.unpack_from(frame)[0], frame[SEQ.size:]


def control_frame(ack: int, link: str | None = None) -> str:
    return json.dumps({"ack": ack} if link is None else {"ack": ack, "link": link})


def parse_control_frame(text: str) -> tuple[int, str | None] | None:
    """(acknowledged sequence number, link instance or None), None when unreadable."""
    try:
        control = json.loads(text)
        ack = int(control.get("ack", 0))
    except (ValueError, AttributeError, TypeError, RecursionError):
        return None
    link = control.get("link")
    return ack, link if isinstance(link, str) else None


@dataclass(frozen=True)
class Received:
    """One frame from the other end of a link: an acknowledgement (`ack` set: the peer has
    everything up to it) or a new data frame (`seq`, `payload`)."""

    ack: int | None = None
    seq: int = 0
    payload: bytes = b""


def receive(message: str | bytes, delivered: int) -> Received | None:
    """What `message` means to a side that has delivered up to `delivered`; None to drop it
    (unreadable, or a replay of a frame already delivered)."""
    if isinstance(message, str):
        control = parse_control_frame(message)
        return None if control is None else Received(ack=control[0])
    frame = parse_data_frame(message)
    if frame is None or frame[0] <= delivered:
        return None
    return Received(seq=frame[0], payload=frame[1])
