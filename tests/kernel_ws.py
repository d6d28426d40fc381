"""A minimal Jupyter kernel websocket client (JSON wire format) for tests and benchmarks."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field

from tornado.websocket import WebSocketClientConnection

from jupyter_walnut.common.remote_kernel import new_message as message  # the one message builder

__all__ = ["ExecResult", "KernelWS", "message"]


@dataclass
class ExecResult:
    status: str = ""
    stdout: str = ""
    stderr: str = ""
    results: list[dict] = field(default_factory=list)
    displays: list[dict] = field(default_factory=list)
    error: dict | None = None
    messages: list[dict] = field(default_factory=list)


class KernelWS:
    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.session = uuid.uuid4().hex

    async def send(self, msg: dict) -> None:
        await self.conn.write_message(json.dumps(msg))

    async def recv(self, timeout: float = 30.0) -> dict:
        raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        if raw is None:
            raise ConnectionError(f"websocket closed: {self.conn.close_code} "
                                  f"{self.conn.close_reason}")
        return json.loads(raw)

    async def request(self, msg_type: str, content: dict, channel: str = "shell",
                      timeout: float = 30.0) -> dict:
        msg = message(msg_type, content, self.session, channel)
        await self.send(msg)
        while True:
            reply = await self.recv(timeout)
            if (reply.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"]
                    and reply["channel"] == channel):
                return reply

    async def execute(self, code: str, timeout: float = 60.0, stdin=None, on_message=None
                      ) -> ExecResult:
        msg = message("execute_request", {"code": code, "silent": False, "store_history": True,
                                          "user_expressions": {}, "allow_stdin": stdin is not None,
                                          "stop_on_error": True}, self.session)
        await self.send(msg)
        msg_id = msg["header"]["msg_id"]
        result, reply_seen, idle_seen = ExecResult(), False, False
        while not (reply_seen and idle_seen):
            m = await self.recv(timeout)
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            result.messages.append(m)
            if on_message is not None:
                on_message(m)
            kind, content = m["header"]["msg_type"], m["content"]
            if m["channel"] == "stdin" and kind == "input_request":
                await self.send({**message("input_reply", {"value": stdin(content["prompt"])},
                                           self.session, "stdin"), "parent_header": m["header"]})
            elif kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind == "execute_result":
                result.results.append(content["data"])
            elif kind == "display_data":
                result.displays.append(content["data"])
            elif kind == "error":
                result.error = content
            elif kind == "status" and content["execution_state"] == "idle":
                idle_seen = True
            elif kind == "execute_reply":
                result.status = content["status"]
                reply_seen = True
        return result

    async def execute_until_restart(self, code: str, timeout: float = 90.0
                                    ) -> tuple[str, list[str]]:
        """Run a cell meant to kill its kernel, reading every message on this one reader.

        Returns ("restarting", stream texts) when the gateway announces the restart (what
        JupyterLab shows as "the kernel appears to have died"), ("dead", texts) when it gave
        up restarting, or ("finished", texts) when the cell's own reply or idle status
        arrives: the kernel survived."""
        msg = message("execute_request", {"code": code, "silent": False, "store_history": True,
                                          "user_expressions": {}, "allow_stdin": False,
                                          "stop_on_error": True}, self.session)
        await self.send(msg)
        texts: list[str] = []
        while True:
            m = await self.recv(timeout)
            kind, content = m["header"]["msg_type"], m["content"]
            ours = m.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"]
            if kind == "status" and content["execution_state"] in ("restarting", "dead"):
                return content["execution_state"], texts
            if ours and kind == "stream":
                texts.append(content["text"])
            if ours and (kind == "execute_reply" or (kind == "status" and
                                                     content["execution_state"] == "idle")):
                return "finished", texts
