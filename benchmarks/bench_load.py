"""Issue #7 — load: N renters x M sessions against one provider node on loopback.

    .venv/bin/python -m benchmarks.bench_load [--renters 5] [--sessions 2] [--seconds 20]
                                              [--quick] [--json out.json]

One provider node (process runtime, plain HTTP on 127.0.0.1, a local ledger in a temporary
directory) in this process. Each renter has its own key and funded payment channels, and
opens M sessions through the signed API; each session gets one kernel and one websocket
through the gateway proxy and executes a trivial cell in a closed loop (no think time) for
the duration. Reported: held load (executes/s over all sessions), error rate, latency
percentiles of one execute round trip (request to reply and idle), session start time, and
every renter's share. Bounded: at most --seconds of load, every execute times out after 30 s,
the whole run after --seconds + 240 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_load.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import pct  # noqa: E402
from jupyter_walnut.common.keys import KeyPair  # noqa: E402
from jupyter_walnut.provider.config import parse_config  # noqa: E402
from jupyter_walnut.renter.provider_client import ProviderClient  # noqa: E402

EXECUTE_TIMEOUT_S = 30.0
PRICE = 1  # MIST per second: deposits last for the whole run
GOAL_P95_MS = 50.0
GOAL_P99_MS = 100.0



def execute_request(code: str, session: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request",
                       "username": "bench", "session": session, "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}


async def execute(conn, code: str, session: str) -> bool:
    """One round trip: True when the kernel replied ok and went idle."""
    msg = execute_request(code, session)
    await conn.write_message(json.dumps(msg))
    msg_id, status, idle = msg["header"]["msg_id"], None, False
    while status is None or not idle:
        raw = await conn.read_message()
        if raw is None:
            raise ConnectionError(f"websocket closed: {conn.close_code} {conn.close_reason}")
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = reply["header"]["msg_type"]
        if kind == "execute_reply":
            status = reply["content"]["status"]
        elif kind == "status" and reply["content"]["execution_state"] == "idle":
            idle = True
    return status == "ok"


class SessionLoad:
    def __init__(self, renter: int, index: int) -> None:
        self.renter, self.index = renter, index
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self.start_s = float("nan")
        self.end = 0.0  # perf_counter when its closed loop ended


async def run_session(node, ledger, key: KeyPair, load: SessionLoad, go: asyncio.Event,
                      stop_at: list[float]) -> None:
    client = ProviderClient(node.url, key)
    t0 = time.perf_counter()
    channel = await asyncio.to_thread(
        ledger.open_channel, key, node.identity.address, key.public_key, 10**7, PRICE, 600)
    created = await client.create_session(image="python", channel_id=channel.channel_id)
    sid, token = created["id"], created["access_token"]
    await client.wait_running(sid, timeout=120)
    kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})
    conn = await client.kernel_websocket(sid, token, kernel["id"])
    session = uuid.uuid4().hex
    await asyncio.wait_for(execute(conn, "1", session), 60)  # the kernel is warm
    load.start_s = time.perf_counter() - t0
    await go.wait()
    try:
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            try:
                ok = await asyncio.wait_for(execute(conn, "1 + 1", session), EXECUTE_TIMEOUT_S)
            except (TimeoutError, ConnectionError, OSError) as exc:
                load.errors.append(type(exc).__name__)
                conn.close()
                conn = await client.kernel_websocket(sid, token, kernel["id"])
                continue
            if ok:
                load.latencies_ms.append((time.perf_counter() - t) * 1000)
            else:
                load.errors.append("execute_reply not ok")
        load.end = time.perf_counter()
    finally:
        conn.close()
        await client.stop_session(sid)


async def main_async(args) -> dict:
    from jupyter_walnut.ledger import LocalLedger
    from jupyter_walnut.provider.node import ProviderNode
    from jupyter_walnut.provider.runtimes.process import ProcessRuntime

    total = args.renters * args.sessions
    config = parse_config({
        "provider": {"name": "load-node", "runtime": "process"},
        "shapes": [{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 1024,
                    "price_per_second_mist": PRICE}],
        "images": [{"name": "python", "reference": "builtin"}],
        "availability": {"max_sessions": total},
        "tls": {"mode": "off"},
        "settlement": {"grace_s": 3600},
    })
    with tempfile.TemporaryDirectory(prefix="walnut-load-") as tmp, \
            LocalLedger(Path(tmp) / "ledger.sqlite") as ledger:
        node = ProviderNode(config, KeyPair.generate(), Path(tmp) / "provider",
                            runtime=ProcessRuntime(Path(tmp) / "provider" / "sessions"),
                            ledger=ledger)
        port = await node.start(host="127.0.0.1", port=0)
        node.url = f"http://127.0.0.1:{port}"
        keys = [KeyPair.generate() for _ in range(args.renters)]
        for key in keys:
            ledger.fund(key.address, 10**12)
        loads = [SessionLoad(r, i) for r in range(args.renters) for i in range(args.sessions)]
        go, stop_at = asyncio.Event(), [0.0]
        tasks = [asyncio.ensure_future(run_session(node, ledger, keys[ld.renter], ld, go,
                                                   stop_at)) for ld in loads]
        try:
            ready_deadline = time.monotonic() + 180
            while not all(ld.start_s == ld.start_s for ld in loads):  # NaN until started
                failed = [t for t in tasks if t.done() and t.exception()]
                if failed:
                    raise failed[0].exception()
                if time.monotonic() > ready_deadline:
                    raise TimeoutError("sessions did not all start within 180 s")
                await asyncio.sleep(0.1)  # waiting for subprocess gateways; bounded above
            t_start = time.perf_counter()
            stop_at[0] = t_start + args.seconds
            go.set()
            await asyncio.wait_for(asyncio.gather(*tasks), args.seconds + 120)
            elapsed = max(ld.end for ld in loads) - t_start  # the load window, not the stops
        finally:
            for task in tasks:
                task.cancel()
            await node.stop(stop_sessions=True)

    latencies = [v for ld in loads for v in ld.latencies_ms]
    errors = sum(len(ld.errors) for ld in loads)
    done = len(latencies)
    per_renter = [sum(len(ld.latencies_ms) for ld in loads if ld.renter == r) / elapsed
                  for r in range(args.renters)]
    return {
        "renters": args.renters, "sessions_per_renter": args.sessions, "sessions": total,
        "seconds": round(elapsed, 2), "executes": done, "errors": errors,
        "held_load_per_s": done / elapsed,
        "error_rate": errors / max(1, done + errors),
        "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95),
        "p99_ms": pct(latencies, 99), "max_ms": max(latencies, default=float("nan")),
        "session_start_p50_s": statistics.median(ld.start_s for ld in loads),
        "session_start_max_s": max(ld.start_s for ld in loads),
        "per_renter_per_s_min": min(per_renter), "per_renter_per_s_max": max(per_renter),
        "error_kinds": sorted({e for ld in loads for e in ld.errors}),
    }


def table(r: dict) -> str:
    rows = [
        ("setup", f"{r['renters']} renters x {r['sessions_per_renter']} sessions, "
                  f"{r['seconds']:.1f} s closed loop", ""),
        ("held load", f"{r['held_load_per_s']:.1f} executes/s ({r['executes']} in total)",
         "reported"),
        ("error rate", f"{100 * r['error_rate']:.2f} % ({r['errors']} errors)", "0 %"),
        ("latency p50", f"{r['p50_ms']:.1f} ms", ""),
        ("latency p95", f"{r['p95_ms']:.1f} ms", f"< {GOAL_P95_MS:.0f} ms"),
        ("latency p99", f"{r['p99_ms']:.1f} ms", f"< {GOAL_P99_MS:.0f} ms"),
        ("latency max", f"{r['max_ms']:.1f} ms", ""),
        ("session start p50 / max", f"{r['session_start_p50_s']:.2f} s / "
                                    f"{r['session_start_max_s']:.2f} s", ""),
        ("per-renter executes/s min / max", f"{r['per_renter_per_s_min']:.1f} / "
                                            f"{r['per_renter_per_s_max']:.1f}",
         "fair share (min > 0)"),
    ]
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    lines = [f"{'figure':{w0}}  {'value':{w1}}  goal", "-" * (w0 + w1 + 24)]
    lines += [f"{a:{w0}}  {b:{w1}}  {c}" for a, b, c in rows]
    verdict = ("MET" if r["error_rate"] == 0 and r["p95_ms"] < GOAL_P95_MS
               and r["p99_ms"] < GOAL_P99_MS and r["per_renter_per_s_min"] > 0 else "NOT MET")
    lines.append(f"goals: {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renters", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=2, help="sessions per renter")
    parser.add_argument("--seconds", type=float, default=20.0, help="closed-loop duration")
    parser.add_argument("--quick", action="store_true", help="2 renters x 2 sessions, 5 s")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.renters, args.sessions, args.seconds = 2, 2, 5.0
    if not (1 <= args.renters <= 50 and 1 <= args.sessions <= 10 and 0 < args.seconds <= 600):
        parser.error("bounded: 1-50 renters, 1-10 sessions each, at most 600 s")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    result = asyncio.run(asyncio.wait_for(main_async(args), args.seconds + 240))
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
