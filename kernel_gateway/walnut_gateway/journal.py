"""The session's output journal: what each kernel emits per execute request, kept on disk.

A kernel goes on computing while the renter's Jupyter Server is gone (a closed laptop), and
what it prints meanwhile reached nobody. Here every kernel of the session gets one extra
IOPub subscriber, read by a thread of its own so the websocket path never waits on it: the
outputs of execute requests (stream, display_data, execute_result, error,
update_display_data, clear_output, busy/idle, the execute_input's execution_count) are
appended to `$HOME/.walnut/journal/<kernel>/<first seq>.jsonl`, one JSON line an entry,
with a monotonic `seq`, whether or not a client is attached. The execute_request itself
(its code and the frontend's `cellId` from its metadata) is taken from the kernel websocket
as it passes. When a request goes idle a `reply` entry records its status.

Bounded: one entry is at most MAX_ENTRY bytes (large outputs are cut with a marker) and the
session's journals at most WALNUT_JOURNAL_MAX_MB (64) MiB: oldest segments go first.

`GET walnut/journal/<kernel_id>?after=<seq>[&limit=<bytes>]` (the gateway's token) answers
{"kernel_id", "entries", "first", "head", "open_since", "more"}; the renter reads it through
the provider's generic gateway proxy and trusts none of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import threading
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1
from jupyter_server.utils import url_path_join
from kernel_gateway.mixins import CORSMixin, JSONErrorsMixin, TokenAuthorizationMixin
from tornado import web

if t.TYPE_CHECKING:
    from kernel_gateway.gatewayapp import KernelGatewayApp

MAX_MB_VAR = "WALNUT_JOURNAL_MAX_MB"
DEFAULT_MAX_MB = 64
MAX_ENTRY = 1 << 20  # one output, as kept
MAX_ANSWER = 4 << 20  # one GET's entries (the renter reads up to 16 MiB a REST answer)
MAX_CODE = 64 << 10
MAX_OPEN = 1024  # requests remembered as running, per kernel
OUTPUT_TYPES = {"stream", "display_data", "execute_result", "error", "update_display_data",
                "clear_output", "execute_input", "status"}
KERNEL_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
SEGMENT = re.compile(r"(\d{1,15})\.jsonl")
POLL_MS = 100


def journal_root() -> Path:
    return Path(os.environ.get("HOME") or ".") / ".walnut" / "journal"


def max_bytes() -> int:
    try:
        mb = float(os.environ.get(MAX_MB_VAR, DEFAULT_MAX_MB))
    except ValueError:
        mb = DEFAULT_MAX_MB
    return max(1 << 20, int(mb * (1 << 20)))


def marker(dropped: int) -> str:
    return f"\n[Walnut journal: {dropped} more characters of this output were not kept]\n"


def bounded(msg_type: str, content: dict, limit: int = MAX_ENTRY) -> dict:
    """The content, cut to about `limit` bytes of JSON with a marker saying what went."""
    size = len(json.dumps(content, default=str))
    if size <= limit:
        return content
    if msg_type == "stream":
        text = str(content.get("text", ""))
        keep = max(0, limit - 256)
        return {**content, "text": text[:keep] + marker(len(text) - keep)}
    if msg_type == "error":
        frames = [str(f)[:limit // 8] for f in content.get("traceback") or []]
        while frames and len(json.dumps(frames)) > limit // 2:
            frames.pop(0)
        return {"ename": str(content.get("ename", ""))[:1024],
                "evalue": str(content.get("evalue", ""))[:limit // 4],
                "traceback": [marker(size), *frames]}
    if msg_type in ("display_data", "execute_result", "update_display_data"):
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        plain = str(data.get("text/plain", ""))[:limit // 2]
        return {**{k: v for k, v in content.items() if k in ("execution_count", "transient")},
                "metadata": {}, "data": {"text/plain": plain + marker(size)}}
    return {"truncated": size}


@dataclass
class Segment:
    kernel_id: str
    first: int
    path: Path
    size: int = 0


@dataclass
class KernelJournal:
    kernel_id: str
    directory: Path
    socket: zmq.Socket
    session: Session
    file: t.BinaryIO | None = None
    segment: Segment | None = None
    open_requests: dict[str, dict] = field(default_factory=dict)  # msg_id -> first seq, ...


class Journal:
    """Every kernel's journal of this gateway; written by one thread, read by GET."""

    def __init__(self, root: Path | None = None, limit: int | None = None) -> None:
        self.root = root or journal_root()
        self.limit = limit or max_bytes()
        self.segment_limit = max(64 << 10, self.limit // 16)
        self.entry_limit = min(MAX_ENTRY, self.segment_limit // 2)
        self.root.mkdir(parents=True, exist_ok=True)
        self.seq = 0
        self.lock = threading.Lock()  # segments, head and open requests: shared with GET
        self.segments: list[Segment] = []  # oldest first: what the cap drops
        self.kernels: dict[str, KernelJournal] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.context = zmq.Context()
        self._scan()
        self.thread = threading.Thread(target=self._run, name="walnut-journal", daemon=True)
        self.thread.start()

    def _scan(self) -> None:
        """An earlier gateway's journals count against the cap and keep the numbering."""
        found = []
        for kernel_dir in self.root.iterdir():
            for path in kernel_dir.glob("*.jsonl") if kernel_dir.is_dir() else ():
                m = SEGMENT.fullmatch(path.name)
                if m:
                    stat = path.stat()
                    found.append((stat.st_mtime, Segment(kernel_dir.name, int(m[1]), path,
                                                         stat.st_size)))
                    # an entry is longer than one byte: no seq of it reached first + size
                    self.seq = max(self.seq, int(m[1]) + stat.st_size)
        self.segments = [s for _, s in sorted(found, key=lambda f: f[0])]
        self._enforce_cap()

    # --- called on the gateway's loop ---------------------------------------------------

    def watch(self, kernel_id: str, info: dict) -> None:
        """Subscribe to the kernel's IOPub now (the thread reads it from its next turn)."""
        if info.get("transport", "tcp") == "tcp":
            url = f"tcp://{info['ip']}:{info['iopub_port']}"
        else:
            url = f"ipc://{info['ip']}-{info['iopub_port']}"
        key = info.get("key") or b""
        sock = self.context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 100_000  # a slow disk holds messages here rather than dropping them
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(url)
        session = Session(key=key.encode() if isinstance(key, str) else key,
                          signature_scheme=info.get("signature_scheme", "hmac-sha256"))
        self.inbox.put(("watch", kernel_id, sock, session))

    def request(self, kernel_id: str, msg_id: str, cell_id: object, code: object) -> None:
        self.inbox.put(("request", kernel_id, msg_id, cell_id, code))

    def forget(self, kernel_id: str) -> None:
        self.inbox.put(("forget", kernel_id))

    # --- the journal thread ---------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        while True:
            first = None
            if self.kernels:
                events = dict(poller.poll(POLL_MS))
            else:
                # pyzmq's poll returns at once when nothing is registered: a gateway with no
                # kernel would spin a core. Wait for the next watch instead.
                events = {}
                try:
                    first = self.inbox.get(timeout=POLL_MS / 1000)
                except queue.Empty:
                    continue
            self._drain_inbox(poller, first)  # requests first: sent before their outputs
            for journal in list(self.kernels.values()):
                if journal.socket in events:
                    self._read(journal)
                if journal.file is not None:
                    journal.file.flush()

    def _drain_inbox(self, poller: zmq.Poller, first: tuple | None = None) -> None:
        while True:
            if first is not None:
                item, first = first, None
            else:
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    return
            if item[0] == "watch":
                _, kernel_id, sock, session = item
                old = self.kernels.pop(kernel_id, None)
                if old is not None:
                    self._close(poller, old)
                poller.register(sock, zmq.POLLIN)
                self.kernels[kernel_id] = KernelJournal(kernel_id, self.root / kernel_id, sock,
                                                        session)
            elif item[0] == "forget":
                journal = self.kernels.pop(item[1], None)
                if journal is not None:
                    self._close(poller, journal)
            elif item[0] == "request":
                _, kernel_id, msg_id, cell_id, code = item
                journal = self.kernels.get(kernel_id)
                if journal is not None:
                    self._append(journal, msg_id, "request", {
                        "cell_id": cell_id if isinstance(cell_id, str) else None,
                        "code": code[:MAX_CODE] if isinstance(code, str) else None})

    def _close(self, poller: zmq.Poller, journal: KernelJournal) -> None:
        poller.unregister(journal.socket)
        journal.socket.close(0)
        if journal.file is not None:
            journal.file.close()
        journal.file = journal.segment = None  # its files stay until the cap drops them

    def _read(self, journal: KernelJournal) -> None:
        for _ in range(256):  # then the other kernels get their turn
            try:
                parts = journal.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                _, parts = journal.session.feed_identities(parts)
                msg = journal.session.deserialize(parts, content=True)
            except Exception:
                continue  # not signed with the kernel's key, or not a message
            self._record(journal, msg)

    def _record(self, journal: KernelJournal, msg: dict) -> None:
        msg_type = msg["header"].get("msg_type")
        parent = msg.get("parent_header") or {}
        if msg_type not in OUTPUT_TYPES or parent.get("msg_type") != "execute_request":
            return
        msg_id = str(parent.get("msg_id", ""))[:128]
        content = msg.get("content") if isinstance(msg.get("content"), dict) else {}
        if msg_type == "status":
            state = content.get("execution_state")
            if state in ("busy", "idle"):
                self._append(journal, msg_id, "status", {"execution_state": state})
            if state == "idle":
                with self.lock:
                    done = journal.open_requests.pop(msg_id, None) or {}
                self._append(journal, msg_id, "reply", {
                    "status": "error" if done.get("error") else "ok",
                    "execution_count": done.get("execution_count")})
            return
        if msg_type == "execute_input":
            content = {"execution_count": content.get("execution_count"),
                       "code": str(content.get("code", ""))[:MAX_CODE]}
        seq = self._append(journal, msg_id, msg_type, bounded(msg_type, content,
                                                              self.entry_limit))
        with self.lock:
            state = journal.open_requests.setdefault(msg_id, {"first": seq})
            while len(journal.open_requests) > MAX_OPEN:
                journal.open_requests.pop(next(iter(journal.open_requests)))
        if msg_type == "error":
            state["error"] = True
        elif msg_type == "execute_input":
            state["execution_count"] = content.get("execution_count")

    def _append(self, journal: KernelJournal, msg_id: str, kind: str, content: dict) -> int:
        with self.lock:
            self.seq += 1
            seq = self.seq
        line = json.dumps({"seq": seq, "t": round(time.time(), 3), "msg_id": msg_id,
                           "type": kind, "content": content}, default=str).encode() + b"\n"
        segment = journal.segment
        if journal.file is None or segment is None \
                or segment.size + len(line) > self.segment_limit:
            segment = self._new_segment(journal, seq)
        assert journal.file is not None
        journal.file.write(line)
        with self.lock:
            segment.size += len(line)
        self._enforce_cap()
        return seq

    def _new_segment(self, journal: KernelJournal, seq: int) -> Segment:
        if journal.file is not None:
            journal.file.close()
        journal.directory.mkdir(parents=True, exist_ok=True)
        path = journal.directory / f"{seq:012d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        journal.file = os.fdopen(fd, "ab", buffering=1 << 16)
        journal.segment = Segment(journal.kernel_id, seq, path)
        with self.lock:
            self.segments.append(journal.segment)
        return journal.segment

    def _enforce_cap(self) -> None:
        """Drop the oldest closed segments so that they and the segments still written to,
        counted as full, stay within the cap."""
        with self.lock:
            active = {id(j.segment) for j in self.kernels.values() if j.segment is not None}
            closed = [s for s in self.segments if id(s) not in active]
            budget = max(0, self.limit - len(active) * self.segment_limit)
            total = sum(s.size for s in closed)
            for victim in closed:
                if total <= budget:
                    break
                self.segments.remove(victim)
                total -= victim.size
                try:
                    victim.path.unlink()
                except OSError:
                    pass

    # --- reading (GET) ----------------------------------------------------------------------

    def read(self, kernel_id: str, after: int, limit: int) -> dict:
        """Entries with seq > after, in order, about `limit` bytes of them at most."""
        directory = self.root / kernel_id
        if not directory.is_dir():
            raise web.HTTPError(404, f"no journal for kernel {kernel_id}")
        segments = sorted((int(m[1]), p) for p in directory.iterdir()
                          if (m := SEGMENT.fullmatch(p.name)))
        entries: list[dict] = []
        size, more = 0, False
        for i, (_first, path) in enumerate(segments):
            if i + 1 < len(segments) and segments[i + 1][0] <= after + 1:
                continue  # wholly at or before `after`
            try:
                lines = path.read_bytes().split(b"\n")
            except OSError:
                continue  # dropped by the cap meanwhile
            for raw in lines[:-1]:  # the last one may be half written
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int) \
                        or entry["seq"] <= after:
                    continue
                if entries and size + len(raw) > limit:
                    more = True
                    break
                entries.append(entry)
                size += len(raw)
            if more:
                break
        with self.lock:
            journal = self.kernels.get(kernel_id)
            running = [s["first"] for s in journal.open_requests.values()] if journal else []
            head = self.seq
        return {"kernel_id": kernel_id, "entries": entries,
                "first": segments[0][0] if segments else None, "head": head,
                "open_since": min(running) if running else None, "more": more}


class JournalHandler(TokenAuthorizationMixin, CORSMixin, JSONErrorsMixin, web.RequestHandler):
    def initialize(self, journal: Journal) -> None:
        self.journal = journal

    async def get(self, kernel_id: str) -> None:
        if not KERNEL_ID.fullmatch(kernel_id):
            raise web.HTTPError(400, "not a kernel id")
        try:
            after = int(self.get_query_argument("after", "0"))
            limit = int(self.get_query_argument("limit", str(MAX_ANSWER)))
        except ValueError:
            raise web.HTTPError(400, "after and limit are integers") from None
        if after < 0 or not 0 < limit <= MAX_ANSWER:
            raise web.HTTPError(400, f"after >= 0 and 0 < limit <= {MAX_ANSWER}")
        answer = await asyncio.get_running_loop().run_in_executor(
            None, self.journal.read, kernel_id, after, limit)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer, default=str))


def _request_fields(incoming: t.Any, v1: bool) -> tuple[str, object, object] | None:
    """(msg_id, cellId, code) of an execute_request frame from the websocket, else None;
    anything else is left unparsed (a cheap substring test first)."""
    if v1:
        if not isinstance(incoming, bytes) or b"execute_request" not in incoming[:4096]:
            return None
        channel, parts = deserialize_msg_from_ws_v1(incoming)
        if channel != "shell" or len(parts) < 4:
            return None
        header, metadata, content = (json.loads(parts[0]), json.loads(parts[2]),
                                     json.loads(parts[3]))
    else:
        if not isinstance(incoming, str) or '"execute_request"' not in incoming:
            return None
        msg = json.loads(incoming)
        header, metadata, content = (msg.get("header"), msg.get("metadata"),
                                     msg.get("content"))
    if not isinstance(header, dict) or header.get("msg_type") != "execute_request":
        return None
    metadata = metadata if isinstance(metadata, dict) else {}
    content = content if isinstance(content, dict) else {}
    return str(header.get("msg_id", ""))[:128], metadata.get("cellId"), content.get("code")


def journaled(base: type, journal: Journal) -> type:
    """The websocket connection class, noting each execute_request before it goes on."""

    class JournaledConnection(base):  # type: ignore[misc, valid-type]
        def handle_incoming_message(self, incoming_msg: t.Any) -> None:
            try:
                fields = _request_fields(incoming_msg,
                                         self.subprotocol == "v1.kernel.websocket.jupyter.org")
            except (ValueError, TypeError, IndexError, UnicodeDecodeError):
                fields = None  # the gateway decides what a malformed frame is
            if fields is not None:
                journal.request(self.kernel_id, *fields)
            super().handle_incoming_message(incoming_msg)

    JournaledConnection.__name__ = f"Journaled{base.__name__}"
    return JournaledConnection


def mount(app: KernelGatewayApp) -> Journal:
    """Journal every kernel of the gateway (started from now on or already running) and
    add the GET route."""
    journal = Journal()
    manager = app.kernel_manager
    start = manager.start_kernel

    async def start_and_watch(*args: t.Any, **kwargs: t.Any) -> str:
        kernel_id = await start(*args, **kwargs)
        journal.watch(kernel_id, manager.get_kernel(kernel_id).get_connection_info())
        return kernel_id

    manager.start_kernel = start_and_watch
    shutdown = manager.shutdown_kernel

    async def shutdown_and_forget(kernel_id: str, *args: t.Any, **kwargs: t.Any) -> None:
        await shutdown(kernel_id, *args, **kwargs)
        journal.forget(kernel_id)

    manager.shutdown_kernel = shutdown_and_forget
    for kernel_id in manager.list_kernel_ids():
        journal.watch(kernel_id, manager.get_kernel(kernel_id).get_connection_info())
    settings = app.web_app.settings
    base = settings.get("kernel_websocket_connection_class")
    if base is not None:
        settings["kernel_websocket_connection_class"] = journaled(base, journal)
    route = web.url(url_path_join("/", app.base_url, r"/walnut/journal/([^/]+)"),
                    JournalHandler, {"journal": journal})
    router = app.web_app.wildcard_router
    router.rules[0:0] = [router.process_rule(route)]  # ahead of the gateway's catch-all 404
    return journal
