"""Jupyter's wire formats, in one place: HMAC signing and ZMQ message parts (the renter's
kernel bridge), the v1 websocket framing (`JUPYTER_V1_SUBPROTOCOL`: the bridge, the resumable
link) and Jupyter Server's default binary frame for messages with buffers (RemoteKernel).

The bridge never re-encodes message JSON: header, parent, metadata and content travel as
the bytes the sender produced; only the signature is recomputed with the local key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct

DELIM = b"<IDS|MSG>"


def sign(key: bytes, parts: list[bytes]) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts[:4]:
        mac.update(part)
    return mac.hexdigest().encode()


def split_zmq(frames: list[bytes]) -> tuple[list[bytes], bytes, list[bytes]]:
    """(identities, signature, [header, parent, metadata, content, *buffers])."""
    try:
        i = frames.index(DELIM)
    except ValueError as exc:
        raise ValueError("no message delimiter") from exc
    if len(frames) < i + 6:
        raise ValueError("truncated message")
    return frames[:i], frames[i + 1], frames[i + 2 :]


def to_ws_v1(channel: str, parts: list[bytes]) -> bytes:
    chan = channel.encode()
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(chan))
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little")
                                                          for o in offsets)
    return b"".join([head, chan, *parts])


def from_ws_v1(frame: bytes) -> tuple[str, list[bytes]]:
    if len(frame) < 8:
        raise ValueError("short v1 frame")
    count = int.from_bytes(frame[:8], "little")
    if count < 2 or len(frame) < 8 * (count + 1):
        raise ValueError("bad v1 offset table")
    offsets = [int.from_bytes(frame[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
    if offsets != sorted(offsets) or offsets[-1] > len(frame):
        raise ValueError("bad v1 offsets")
    channel = frame[offsets[0] : offsets[1]].decode()
    return channel, [frame[offsets[i] : offsets[i + 1]] for i in range(1, count - 1)]


def serialize_binary(msg: dict, buffers: list) -> bytes:
    """Jupyter Server's binary websocket frame: a count, offsets (big-endian uint32), the
    JSON message, then the buffers."""
    parts = [json.dumps(msg).encode()] + [memoryview(b).cast("B") for b in buffers]
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return b"".join([struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets), *parts])


def deserialize_binary(frame: bytes) -> dict:
    view = memoryview(frame)
    count = struct.unpack("!I", view[:4])[0]
    offsets = list(struct.unpack(f"!{count}I", view[4 : 4 * (count + 1)])) + [len(frame)]
    parts = [view[offsets[i] : offsets[i + 1]] for i in range(count)]
    msg = json.loads(bytes(parts[0]))
    msg["buffers"] = parts[1:]
    return msg
