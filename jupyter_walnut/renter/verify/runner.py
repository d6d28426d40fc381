"""Run the probe inside a session and judge it: the renter's check at every session start.

The probe runs in a fresh kernel of the session's gateway (reached through the provider's
proxy with the session token, like any kernel), which is deleted afterwards: the user's
kernels never see it. The session is billed by the second as usual, so a session stopped
after a failed check costs the seconds of the check and nothing more.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING

from ...common import probe
from ...common.errors import BadGateway
from ...common.probe_check import Verdict, check, verify_attestation
from ..errors import RenterError
from ..provider_client import ProviderAPIError, ProviderClient

if TYPE_CHECKING:
    from ...ledger import Ledger
    from ..manager import RenterManager
    from ..store import RenterSession

log = logging.getLogger("walnut.verify")

PROBE_TIMEOUT_S = 90.0  # kernel start + imports + ~1 s of benchmark, on a slow machine
BENCHMARK_SECONDS = 1.0


class ProbeError(BadGateway):
    """The probe could not run or its answer could not be read (502)."""


def probe_code(seconds: float = BENCHMARK_SECONDS) -> str:
    """The cell sent to the kernel: the probe module run in a namespace of its own."""
    source = inspect.getsource(probe) + f"\nmain({seconds!r})\n"
    return f"exec(compile({source!r}, '<walnut-probe>', 'exec'), {{'__name__': 'walnut_probe'}})"


def parse_probe_output(stdout: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith(probe.MARKER):
            return json.loads(line[len(probe.MARKER):])
    raise ProbeError(f"the probe printed no result ({stdout[-200:]!r})")


def _message(msg_type: str, content: dict, session: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "walnut",
                       "session": session, "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}


async def _execute(conn, code: str, session: str) -> str:
    """Send one execute_request; return its stdout once the kernel is idle again."""
    msg = _message("execute_request", {"code": code, "silent": False, "store_history": False,
                                       "user_expressions": {}, "allow_stdin": False,
                                       "stop_on_error": True}, session)
    await conn.write_message(json.dumps(msg))
    stdout, error, replied, idle = "", None, False, False
    while not (replied and idle):
        raw = await conn.read_message()
        if raw is None:
            raise ProbeError("the kernel websocket closed during the probe")
        if not isinstance(raw, str):
            continue  # binary frames carry buffers; the probe sends none
        m = json.loads(raw)
        if m.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
            continue
        kind, content = m["header"]["msg_type"], m["content"]
        if kind == "stream" and content.get("name") == "stdout":
            stdout += content["text"]
        elif kind == "error":
            error = f"{content.get('ename')}: {content.get('evalue')}"
        elif kind == "execute_reply":
            replied = True
        elif kind == "status" and content.get("execution_state") == "idle":
            idle = True
    if error:
        raise ProbeError(f"the probe raised {error}")
    return stdout


async def run_probe_in_session(client: ProviderClient, session_id: str, access_token: str,
                               seconds: float = BENCHMARK_SECONDS) -> dict:
    """Start a kernel in the session, run the probe, delete the kernel; the report."""
    kernel = await client.gateway(session_id, access_token, "POST", "api/kernels",
                                  {"name": "python3"})
    conn = None
    try:
        ws_session = uuid.uuid4().hex
        conn = await client.kernel_websocket(session_id, access_token, kernel["id"],
                                             session=ws_session)
        return parse_probe_output(await _execute(conn, probe_code(seconds), ws_session))
    finally:
        if conn is not None:
            conn.close()
        try:
            await client.gateway(session_id, access_token, "DELETE",
                                 f"api/kernels/{kernel['id']}")
        except ProviderAPIError:
            pass  # the session may be gone already; its kernels went with it


async def find_attestation(ledger: Ledger, provider_address: str) -> tuple[dict | None, str]:
    """(the provider's verified attested report or None, its state in words)."""
    try:
        entries = await asyncio.to_thread(ledger.list_providers)
    except Exception as exc:  # a registry we cannot read: judge on measurements alone
        return None, f"registry unavailable: {exc}"
    for entry in entries:
        if entry.owner != provider_address:
            continue
        try:
            attestation = json.loads(entry.specs or "{}").get("attestation")
        except (ValueError, AttributeError):
            attestation = None
        if not attestation:
            continue
        problem = verify_attestation(attestation, entry.owner)
        if problem:
            return None, problem
        return attestation["report"], "verified"
    return None, "none published"


def offer_of(session: RenterSession, status: dict) -> dict:
    shape = next((s for s in status.get("shapes", []) if s["name"] == session.shape), {})
    return {"gpus": session.gpus, "gpu_model": session.gpu_model, "cpus": session.cpus,
            "memory_mb": session.memory_mb, "gpu_memory_mb": shape.get("gpu_memory_mb")}


async def verify_session(manager: RenterManager, session: RenterSession,
                         on_progress=None) -> dict:
    """Check a running session against its offer; record the result in the session.

    On failure the session is stopped at once (the final voucher pays only the seconds
    so far) and a RenterError(409) says why."""
    if on_progress is not None:
        on_progress("verifying the hardware")
    client = manager.client(session.provider_url)
    t0 = time.perf_counter()
    try:
        status = await client.status()
        attested, attestation_state = await find_attestation(manager.ledger,
                                                             session.provider_address)
        report = await asyncio.wait_for(
            run_probe_in_session(client, session.id, session.access_token), PROBE_TIMEOUT_S)
        uuids = [g["uuid"] for g in status.get("hardware", {}).get("gpus", [])]
        verdict = check(report, offer_of(session, status), uuids, attested)
    except (ProbeError, ProviderAPIError, OSError, TimeoutError, ValueError) as exc:
        verdict = Verdict(ok=False, reasons=[f"the check could not run: {exc or 'timed out'}"])
        attestation_state = "unknown"
    result = {**verdict.to_json(), "check_seconds": round(time.perf_counter() - t0, 2),
              "attestation_state": attestation_state}
    record(manager, session.id, result)
    if verdict.ok:
        log.info("session %s verified in %.1fs", session.id, result["check_seconds"])
        return result
    why = "; ".join(verdict.reasons)
    log.warning("session %s failed verification: %s", session.id, why)
    await manager.stop(session.id, reason=f"verification failed: {why}")
    raise RenterError(409, f"verification failed: {why}; the session was stopped, "
                           "you paid only for the check")


def record(manager: RenterManager, session_id: str, result: dict) -> None:
    fresh = manager.store.get(session_id)
    if fresh is not None:  # read-modify-write with no await between: no update is lost
        manager.store.update(session_id, extra={**fresh.extra, "verification": result})
