"""A client for one remote Jupyter kernel behind a kernel gateway (REST + websocket, the
default JSON protocol with binary frames for buffers).

The renter reaches a session's gateway through the provider's proxy with the session token
(`ProviderClient.session_gateway`: pinned TLS); the provider reaches it directly with the
gateway token (a URL). Both use this class; the connections themselves are made by
`common.gateway.Gateway` only.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tornado import httpclient, websocket

from .errors import BadGateway
from .gateway import Gateway, ProviderAPIError
from .jupyter_wire import deserialize_binary, serialize_binary


class KernelError(BadGateway):
    """The remote kernel could not be reached or stopped answering (502)."""


@dataclass
class ExecuteResult:
    status: str = ""
    stdout: str = ""
    stderr: str = ""
    error: dict | None = None
    outputs: list[dict] = field(default_factory=list)  # iopub messages, for re-display


def new_message(msg_type: str, content: dict, session: str, channel: str = "shell") -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "walnut",
                   "session": session, "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": content, "channel": channel,
    }


class RemoteKernel:
    """One kernel: start or attach, execute with live outputs, comm round trips."""

    def __init__(self, gateway: Gateway | str, headers: dict[str, str] | None = None,
                 kernel_id: str | None = None, timeout: float = 60.0) -> None:
        """`gateway`: a Gateway, or the URL of one reached directly with `headers`."""
        self.gateway = gateway if isinstance(gateway, Gateway) else \
            Gateway(gateway, headers or {}, timeout=timeout)
        self.kernel_id = kernel_id
        self.timeout = timeout
        self.session = uuid.uuid4().hex
        self.conn: websocket.WebSocketClientConnection | None = None
        self._lock = asyncio.Lock()  # one request at a time on this connection
        # the most one cell's outputs may hold here (the provider's control kernel runs where
        # the renter's code can print); None: no cap
        self.max_output_bytes: int | None = None

    async def _rest(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return await self.gateway.rest(method, path, body, timeout=self.timeout)
        except ProviderAPIError as exc:
            what = "unreachable" if exc.status == 0 else "refused"
            raise KernelError(f"kernel gateway {what}: {exc.message}") from exc

    async def start(self, name: str = "python3") -> str:
        if self.kernel_id is None:
            self.kernel_id = (await self._rest("POST", "api/kernels", {"name": name}))["id"]
        await self.connect()
        return self.kernel_id

    async def connect(self) -> None:
        try:
            self.conn = await self.gateway.websocket(self.kernel_id, session=self.session)
        except ProviderAPIError as exc:
            raise KernelError(f"kernel websocket unavailable: {exc.message}") from exc
        except (httpclient.HTTPClientError, OSError) as exc:
            raise KernelError(f"kernel websocket unavailable: {exc}") from exc
        # wait until the kernel answers, so the first execute is not lost while it boots
        await self.request("kernel_info_request", {}, timeout=self.timeout)

    async def interrupt(self) -> None:
        await self._rest("POST", f"api/kernels/{self.kernel_id}/interrupt")

    async def shutdown(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.kernel_id is not None:
            try:
                await self._rest("DELETE", f"api/kernels/{self.kernel_id}")
            except KernelError:
                pass  # the session may already be gone; nothing left to stop then

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.protocol is not None

    async def send(self, msg: dict, buffers: list | None = None) -> None:
        if self.conn is None:
            raise KernelError("not connected to the remote kernel")
        try:
            if buffers:
                await self.conn.write_message(serialize_binary(msg, buffers), binary=True)
            else:
                await self.conn.write_message(json.dumps(msg))
        except websocket.WebSocketClosedError as exc:
            self.conn = None
            raise KernelError("the remote kernel connection closed") from exc

    async def recv(self, timeout: float | None) -> dict:
        if self.conn is None:
            raise KernelError("not connected to the remote kernel")
        try:
            raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        except TimeoutError as exc:
            raise KernelError(f"no answer from the remote kernel within {timeout:.0f}s") \
                from exc
        if raw is None:
            reason = self.conn.close_reason or "the session may have ended"
            self.conn = None
            raise KernelError(f"the remote kernel connection closed ({reason})")
        if isinstance(raw, bytes):
            return deserialize_binary(raw)
        msg = json.loads(raw)
        msg.setdefault("buffers", [])
        return msg

    async def request(self, msg_type: str, content: dict, timeout: float | None = 30.0,
                      channel: str = "shell") -> dict:
        msg = new_message(msg_type, content, self.session, channel)
        await self.send(msg)
        msg_id = msg["header"]["msg_id"]
        while True:
            reply = await self.recv(timeout)
            if (reply.get("parent_header", {}).get("msg_id") == msg_id
                    and reply.get("channel") == channel):
                return reply

    async def execute(self, code: str, on_output: Callable[[dict], None] | None = None,
                      timeout: float | None = None, silent: bool = False,
                      store_history: bool = True) -> ExecuteResult:
        """Run `code`; iopub outputs go to `on_output` as they arrive. `timeout` bounds the
        wait for any next message, None waits as long as the cell runs."""
        async with self._lock:
            msg = new_message("execute_request", {
                "code": code, "silent": silent, "store_history": store_history,
                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
            }, self.session)
            await self.send(msg)
            return await self._collect(msg["header"]["msg_id"], on_output, timeout)

    async def _collect(self, msg_id: str, on_output, timeout: float | None) -> ExecuteResult:
        result, reply_seen, idle_seen, held = ExecuteResult(), False, False, 0
        while not (reply_seen and idle_seen):
            m = await self.recv(timeout)
            kind, content = m["header"]["msg_type"], m["content"]
            if kind == "status" and content["execution_state"] in ("dead", "restarting"):
                raise KernelError("the remote kernel died while running the cell")
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if kind == "status":
                idle_seen = content["execution_state"] == "idle"
                continue
            if kind == "execute_reply":
                result.status, reply_seen = content["status"], True
                if content["status"] == "error" and result.error is None:
                    result.error = content
                continue
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind == "error":
                result.error = content
            elif kind == "execute_input":
                continue
            held += len(json.dumps(content))
            if self.max_output_bytes is not None and held > self.max_output_bytes:
                raise KernelError(f"the cell's output went over {self.max_output_bytes} bytes")
            result.outputs.append(m)
            if on_output is not None:
                on_output(m)
        return result

    async def comm_call(self, target: str, data: dict, buffers: list | None = None,
                        timeout: float | None = None) -> tuple[dict, list[memoryview]]:
        """Open a comm on `target` with data and buffers; the first comm message back is the
        answer (its data and buffers). The target closes the comm after answering."""
        async with self._lock:
            comm_id = uuid.uuid4().hex
            msg = new_message("comm_open", {"comm_id": comm_id, "target_name": target,
                                            "data": data}, self.session)
            await self.send(msg, buffers)
            while True:
                m = await self.recv(timeout)
                if m["header"]["msg_type"] == "comm_msg" and \
                        m["content"].get("comm_id") == comm_id:
                    return m["content"]["data"], m["buffers"]
                if m["header"]["msg_type"] == "comm_close" and \
                        m["content"].get("comm_id") == comm_id:
                    raise KernelError(f"the remote kernel has no comm target {target!r}")
