"""Local ZMQ sockets <-> one remote kernel websocket.

The server's kernel manager, its websocket connections and any ZMQ client talk to ordinary
local kernel sockets; the bridge carries each message to the remote kernel gateway over one
websocket (through the provider's proxy) and routes the replies back to the client that
asked. The websocket is a resumable link (`walnut.resume.v1`, see provider/links.py):
frames are numbered and kept until acknowledged, so a dropped connection is reconnected
and both sides replay what the other missed, losing and duplicating nothing.

Every message from the provider passes the output policy (output_policy.py) before it
reaches a local socket: outputs become passive content unless the renter trusts the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import json
import logging
import secrets
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

import zmq
import zmq.asyncio
from tornado.websocket import WebSocketClientConnection

from ...common.jupyter_wire import DELIM, from_ws_v1, sign, split_zmq, to_ws_v1
from ...common.keepalive import Keepalive, Watchdog
from ...common.protocol import control_frame, data_frame, parse_control_frame, receive
from .output_policy import POLICY_TYPES, OutputPolicy

ACK_EVERY = 32  # acknowledge after this many frames, or after ACK_DELAY_S of quiet
ACK_DELAY_S = 0.2

log = logging.getLogger("walnut.kernel.bridge")

ROUTED = ("shell", "control", "stdin")
MAX_ROUTES = 8192


class BridgeClosed(Exception):
    pass


class KernelBridge:
    def __init__(
        self,
        connect: Callable[[str, int], Awaitable[WebSocketClientConnection]],
        on_shutdown_request: Callable[[bool], Awaitable[None]],
        is_session_alive: Callable[[], Awaitable[tuple[bool, str]]],
        *,
        ip: str = "127.0.0.1",
        reconnect_timeout: float = 60.0,
        trust_outputs: bool = False,
    ) -> None:
        self._connect = connect
        self._on_shutdown_request = on_shutdown_request
        self._is_session_alive = is_session_alive
        self.ip = ip
        self.reconnect_timeout = reconnect_timeout
        # the provider's outputs are made inert unless the renter chose to trust them
        self.policy: OutputPolicy | None = None if trust_outputs else OutputPolicy()
        self.key = secrets.token_hex(32).encode()
        self.ws_session = uuid.uuid4().hex  # stable across reconnects: the gateway replays
        self.ctx = zmq.asyncio.Context()
        self.sockets: dict[str, zmq.asyncio.Socket] = {}
        self.ports: dict[str, int] = {}
        self.ws: WebSocketClientConnection | None = None
        self._routes: OrderedDict[str, list[bytes]] = OrderedDict()  # msg_id -> client idents
        self._executing: OrderedDict[str, bytes] = OrderedDict()  # msg_id -> request header
        self._unacked: deque[tuple[int, bytes]] = deque()  # sent, not yet acknowledged
        self._out_seq = 0
        self._in_seq = 0  # the last frame received from the provider
        self._in_acked = 0
        self._ack_timer: asyncio.TimerHandle | None = None
        self._link: str | None = None  # the provider's link instance
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.closed = False
        self.dead_reason: str | None = None
        self.on_dead: Callable[[str], None] = lambda reason: None
        # "connected", "reconnecting" while a lost link is retried, or "dead": for the renter
        self.link_state = "connecting"
        self.on_link_state: Callable[[str], None] = lambda state: None
        # an execute request's reply reached this server's clients (its outputs were shown)
        self.on_reply: Callable[[str], None] = lambda msg_id: None

    # --- set-up ----------------------------------------------------------------------

    def bind(self) -> dict:
        """Bind the local sockets once; a restart keeps the same ports and key."""
        if not self.sockets:
            kinds = {"shell": zmq.ROUTER, "control": zmq.ROUTER, "stdin": zmq.ROUTER,
                     "iopub": zmq.PUB, "hb": zmq.REP}
            for channel, kind in kinds.items():
                sock = self.ctx.socket(kind)
                sock.linger = 0
                if kind == zmq.ROUTER:
                    sock.router_handover = 1  # a reconnecting client takes its identity back
                self.ports[channel] = sock.bind_to_random_port(f"tcp://{self.ip}")
                self.sockets[channel] = sock
        return self.connection_info()

    def connection_info(self) -> dict:
        return {
            "transport": "tcp", "ip": self.ip, "key": self.key, "signature_scheme": "hmac-sha256",
            "shell_port": self.ports["shell"], "iopub_port": self.ports["iopub"],
            "stdin_port": self.ports["stdin"], "control_port": self.ports["control"],
            "hb_port": self.ports["hb"],
        }

    async def start(self) -> None:
        self.bind()
        await self._open_ws()
        self.dead_reason = None
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._pump_local(c)) for c in ROUTED]
            self._tasks.append(asyncio.ensure_future(self._heartbeat()))
        self._tasks.append(asyncio.ensure_future(self._pump_remote()))

    async def _open_ws(self) -> None:
        ws = await self._connect(self.ws_session, self._in_seq)
        Watchdog(ws, Keepalive.from_env())  # a provider gone silent closes ws: we resume
        # the provider speaks first: what it has from us, and which link instance it is
        hello = await asyncio.wait_for(ws.read_message(), 30)
        control = parse_control_frame(hello) if isinstance(hello, str) else None
        if control is None:
            ws.close()
            raise ConnectionError("the provider did not open a resumable link")
        ack, link = control
        if link != self._link:
            if self._link is not None:
                log.warning("provider link restarted: numbering starts afresh")
            self._link = link
            self._in_seq = self._in_acked = 0
        self._drop_acked(ack)
        sent_up_to = 0
        while True:  # replay in order, including anything queued meanwhile
            pending = [(seq, frame) for seq, frame in self._unacked if seq > sent_up_to]
            if not pending:
                break
            for seq, frame in pending:
                await ws.write_message(frame, binary=True)
                sent_up_to = seq
        self.ws = ws
        self._connected.set()
        self._set_link_state("connected")

    def _drop_acked(self, ack: int) -> None:
        while self._unacked and self._unacked[0][0] <= ack:
            self._unacked.popleft()

    def _ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self.ws is not None and self._connected.is_set() and self._in_seq > self._in_acked:
            try:
                self.ws.write_message(control_frame(self._in_seq))
                self._in_acked = self._in_seq
            except Exception:
                pass  # acknowledged again after the reconnect

    # --- renter -> kernel ----------------------------------------------------------------

    async def _pump_local(self, channel: str) -> None:
        sock = self.sockets[channel]
        while not self.closed:
            try:
                frames = await sock.recv_multipart(copy=True)
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            try:
                idents, signature, parts = split_zmq(frames)
            except ValueError:
                continue
            if not _digest_eq(signature, sign(self.key, parts)):
                log.warning("dropped a %s message with a bad signature", channel)
                continue
            header = json.loads(parts[0])
            msg_id = header.get("msg_id", "")
            self._remember(self._routes, msg_id, idents)
            if channel == "control" and header.get("msg_type") == "shutdown_request":
                # the gateway's REST API owns kernel lifecycle: restart or delete there
                restart = bool(json.loads(parts[3]).get("restart", False))
                self._tasks.append(asyncio.ensure_future(self._shutdown(idents, header, restart)))
                continue
            if channel == "shell" and header.get("msg_type") == "execute_request":
                self._remember(self._executing, msg_id, parts[0])
            await self.send_to_kernel(to_ws_v1(channel, parts))

    async def send_to_kernel(self, frame: bytes) -> None:
        if self.dead_reason is not None:
            return
        self._out_seq += 1
        numbered = data_frame(self._out_seq, frame)
        self._unacked.append((self._out_seq, numbered))  # until the provider acknowledges
        if not self._connected.is_set() or self.ws is None:
            return  # replayed after reconnecting
        try:
            await self.ws.write_message(numbered, binary=True)
        except Exception:
            pass  # the socket died under us: replayed after reconnecting

    async def _shutdown(self, idents: list[bytes], header: dict, restart: bool) -> None:
        status = "ok"
        try:
            await self._on_shutdown_request(restart)
        except Exception as exc:
            log.warning("remote shutdown failed: %s", exc)
            status = "error"
        self._reply(idents, "control", "shutdown_reply", header,
                    {"status": status, "restart": restart})

    # --- kernel -> renter ----------------------------------------------------------------

    async def _pump_remote(self) -> None:
        while not self.closed:
            ws = self.ws
            msg = await ws.read_message() if ws is not None else None
            if msg is None:
                if self.closed or self.dead_reason is not None:
                    return
                self._connected.clear()
                # a reset, or keepalive pings unanswered (a silent partition): resume
                log.warning("kernel websocket lost (%s): reconnecting",
                            (ws.close_reason if ws is not None else None) or "closed")
                self._set_link_state("reconnecting")
                if not await self._reconnect():
                    return
                continue
            got = receive(msg, self._in_seq)  # None: replayed after a reconnect, delivered
            if got is None:
                continue
            if got.ack is not None:
                self._drop_acked(got.ack)
                continue
            self._in_seq = got.seq
            try:
                channel, parts = from_ws_v1(got.payload)
            except ValueError:
                continue
            self._deliver(channel, parts)
            if self._in_seq - self._in_acked >= ACK_EVERY:
                self._ack()
            elif self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY_S, self._ack)

    def _deliver(self, channel: str, parts: list[bytes]) -> None:
        if self.dead_reason is not None:
            return  # said dead: whatever the container still sends would revive it
        if len(parts) < 4:
            return  # not a Jupyter message: no client could read it
        try:  # strict UTF-8, as the clients decode: one reading of msg_type for all
            header = json.loads(parts[0].decode("utf-8"))
            msg_type = header.get("msg_type")
        except (ValueError, AttributeError, RecursionError):
            return  # a header no client could classify is never relayed
        if self.policy is not None:
            cleaned = self._apply_policy(msg_type, parts)
            if cleaned is None:
                return
            parts = cleaned
        signature = sign(self.key, parts)
        if channel == "iopub":
            self.sockets["iopub"].send_multipart([DELIM, signature, *parts], copy=False)
            return
        if channel not in ROUTED:
            return
        try:
            parent_id = json.loads(parts[1] or b"{}").get("msg_id", "")
        except (ValueError, AttributeError, RecursionError):
            return
        idents = self._routes.get(parent_id)
        if idents is None:
            return  # a reply to a request this bridge never sent (e.g. the gateway's own)
        self.sockets[channel].send_multipart([*idents, DELIM, signature, *parts], copy=False)
        if channel == "shell" and msg_type == "execute_reply":
            self._executing.pop(parent_id, None)
            self.on_reply(parent_id)

    def _apply_policy(self, msg_type: object, parts: list[bytes]) -> list[bytes] | None:
        """The message with only passive output (output_policy), None to drop it. Content
        is parsed only for the types the policy reads and re-encoded only if it changed."""
        if not isinstance(msg_type, str):
            return None
        if msg_type not in POLICY_TYPES and msg_type != "comm_close":
            return parts  # streams, status, errors...: relayed byte for byte
        try:
            content = json.loads(parts[3].decode("utf-8"))  # strict, as the clients decode
        except (ValueError, RecursionError):
            return None
        try:
            cleaned = self.policy.sanitize(msg_type, content)
        except Exception:  # whatever the provider crafted, the relay goes on without it
            log.warning("dropped a %s message the output policy could not read", msg_type,
                        exc_info=True)
            return None
        if cleaned is content:
            return parts
        return [parts[0], parts[1], parts[2], json.dumps(cleaned).encode(), *parts[4:]]

    async def _reconnect(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout
        delay = 0.1
        while not self.closed:
            try:
                alive, reason = await self._is_session_alive()
            except Exception as exc:  # e.g. tornado's ValueError for a reset mid-TLS-setup
                log.info("session check failed while reconnecting: %r", exc)
                alive, reason = True, ""  # unknown: keep trying until the deadline
            if not alive:
                self.mark_dead(reason)
                return False
            try:
                await self._open_ws()
                log.info("kernel websocket reconnected")
                return True
            except Exception as exc:
                if loop.time() > deadline:
                    self.mark_dead(f"lost the connection to the provider ({exc})")
                    return False
            await asyncio.sleep(delay)  # reconnect backoff against a remote service
            delay = min(delay * 2, 2.0)
        return False

    def _set_link_state(self, state: str) -> None:
        if state != self.link_state:
            self.link_state = state
            self.on_link_state(state)

    async def _heartbeat(self) -> None:
        sock = self.sockets["hb"]
        while not self.closed:
            try:
                ping = await sock.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            await sock.send_multipart(ping)

    # --- death and closing -----------------------------------------------------------

    def mark_dead(self, reason: str) -> None:
        """The remote kernel is gone for good: tell every waiting cell why, then say dead."""
        if self.dead_reason is not None:
            return
        self.dead_reason = reason
        self._connected.clear()
        self._set_link_state("dead")
        text = f"Walnut: {reason}\n"
        for msg_id, header_bytes in list(self._executing.items()):
            header = json.loads(header_bytes)
            self._publish("stream", header, {"name": "stderr", "text": text})
            self._publish("error", header, {"ename": "WalnutSessionEnded", "evalue": reason,
                                            "traceback": [text.strip()]})
            idents = self._routes.get(msg_id)
            if idents is not None:
                self._reply(idents, "shell", "execute_reply", header,
                            {"status": "error", "ename": "WalnutSessionEnded", "evalue": reason,
                             "traceback": [text.strip()], "execution_count": None})
            self._publish("status", header, {"execution_state": "idle"})
        self._executing.clear()
        self._publish("status", {}, {"execution_state": "dead"})
        self.on_dead(reason)

    def _message(self, msg_type: str, parent: dict, content: dict) -> list[bytes]:
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "walnut",
                  "session": self.ws_session, "date": _now_iso(), "version": "5.3"}
        return [json.dumps(header).encode(), json.dumps(parent).encode(), b"{}",
                json.dumps(content).encode()]

    def _publish(self, msg_type: str, parent: dict, content: dict) -> None:
        parts = self._message(msg_type, parent, content)
        self.sockets["iopub"].send_multipart([DELIM, sign(self.key, parts), *parts])

    def _reply(self, idents: list[bytes], channel: str, msg_type: str, parent: dict,
               content: dict) -> None:
        parts = self._message(msg_type, parent, content)
        self.sockets[channel].send_multipart([*idents, DELIM, sign(self.key, parts), *parts])

    async def detach_remote(self) -> None:
        """Close the websocket only (restart keeps the local sockets)."""
        ws, self.ws = self.ws, None
        self._connected.clear()
        if ws is not None:
            ws.close()

    async def close(self) -> None:
        self.closed = True
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        await self.detach_remote()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sock in self.sockets.values():
            sock.close(linger=500)  # let the last replies (e.g. why it died) go out
        await asyncio.to_thread(self.ctx.term)

    @staticmethod
    def _remember(store: OrderedDict, key: str, value) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > MAX_ROUTES:
            store.popitem(last=False)


def _digest_eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
