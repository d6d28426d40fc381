"""Many idle sessions of one renter on one provider: does payment keep up? (issue #18)

A real provider node (Docker runtime and TLS with pinning by default; `--runtime process`,
`--tls off` for the cheaper legs) on its own event loop in a thread, and one renter: the real
RenterManager with its payment loop as the Jupyter Server extension runs it, at the default
intervals (renter refresh 2 s, provider metering 1 s, grace 30 s). N sessions are launched
(no kernels: an idle session is its gateway), then left idle while this script samples the
provider's own books every second.

Printed per run: sessions stopped for payment; the largest voucher gap (time between two
vouchers the provider accepted for one session; goal <= refresh interval + 1 s); the largest
unpaid lag (metered cost minus newest voucher, in seconds of price); and the latency of the
renter's `GET /sessions/<id>` (the status read the payment loop makes per session).

    python benchmarks/bench_sessions.py --sessions 64 --idle-s 600
    python benchmarks/bench_sessions.py --sessions 16 --idle-s 90 --runtime process --tls off
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from _common import median, pct

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.tls import generate_self_signed, server_context
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.provider.config import parse_config
from jupyter_walnut.provider.node import ProviderNode
from jupyter_walnut.renter import provider_client
from jupyter_walnut.renter.manager import RenterManager

PRICE = 1000  # MIST per second


class ProviderThread:
    """The provider node on its own loop, as a separate machine's process would be."""

    def __init__(self, state_dir: Path, ledger_path: Path, runtime: str, tls: bool, n: int
                 ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.identity = KeyPair.generate()
        self.voucher_times: dict[str, list[float]] = {}
        config = parse_config({
            "provider": {"name": "bench-sessions", "runtime": runtime},
            "shapes": [{"name": "cpu-tiny", "gpus": 0, "cpus": 0.25, "memory_mb": 512,
                        "disk_mb": 256, "price_per_second_mist": PRICE}],
            "images": [{"name": "python", "reference": "builtin"}],
            "availability": {"max_sessions": n},
        })
        ssl_context, self.pin = None, None
        if tls:
            cert, key = state_dir / "cert.pem", state_dir / "key.pem"
            self.pin = generate_self_signed("bench-sessions", cert, key)
            ssl_context = server_context(cert, key)
            ssl_context.walnut_fingerprint = self.pin  # the audience signed requests name
        self.docker = None
        if runtime == "docker":
            import docker

            from jupyter_walnut.provider.image import ensure_gateway_image
            from jupyter_walnut.provider.runtimes.docker import DockerRuntime

            self.docker = docker.from_env()
            ensure_gateway_image(self.docker, progress=print)
            rt = DockerRuntime(self.docker, provider_id="bench-" + self.identity.address[2:12],
                               disk_dir=state_dir / "disks")
        else:
            from jupyter_walnut.provider.runtimes.process import ProcessRuntime

            rt = ProcessRuntime(state_dir / "sessions")
        self.ledger = LocalLedger(ledger_path)

        async def start():
            node = ProviderNode(config, self.identity, state_dir, runtime=rt,
                                ledger=self.ledger)
            return node, await node.start(host="127.0.0.1", port=0, ssl_context=ssl_context)

        self.node, port = self.run(start())
        record = self.node.sessions.record_voucher

        def timed_record(session_id, *args):  # when each voucher was accepted
            rec = record(session_id, *args)
            self.voucher_times.setdefault(session_id, []).append(time.monotonic())
            return rec

        self.node.sessions.record_voucher = timed_record
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.url = f"{url}#sha256={self.pin}" if self.pin else url

    def run(self, coro, timeout: float = 900):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def books(self) -> list:
        async def read():
            return self.node.store.list()
        return self.run(read())

    def stop(self) -> None:
        self.run(self.node.stop(stop_sessions=True))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.ledger.close()
        if self.docker is not None:
            self.docker.close()


def timed_status_reads() -> list[float]:
    """Wrap the renter's status read to time every call the payment loop makes."""
    times: list[float] = []
    original = provider_client.ProviderClient.get_session

    async def get_session(self, session_id):
        t0 = time.perf_counter()
        try:
            return await original(self, session_id)
        finally:
            times.append(time.perf_counter() - t0)

    provider_client.ProviderClient.get_session = get_session
    return times


async def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="walnut-bench-sessions-"))
    os.environ["JUPYTER_DATA_DIR"] = str(tmp / "jupyter")  # kernelspecs stay in here
    ledger_path = tmp / "ledger.sqlite"
    (tmp / "provider").mkdir()
    provider = ProviderThread(tmp / "provider", ledger_path, args.runtime, args.tls == "on",
                              args.sessions)
    key = KeyPair.generate()
    ledger = LocalLedger(ledger_path)
    ledger.fund(key.address, 10**13)
    manager = RenterManager(tmp / "renter", [provider.url], key=key, ledger=ledger,
                            use_registry=False)
    reads = timed_status_reads()
    manager.start_polling()  # as the extension does at server start (default 2 s interval)
    result: dict = {"sessions": args.sessions, "runtime": args.runtime, "tls": args.tls,
                    "idle_s": args.idle_s, "poll_interval_s": manager.poll_interval_s}
    try:
        t0 = time.monotonic()
        gate = asyncio.Semaphore(args.launch_concurrency)

        async def launch():
            async with gate:
                return await manager.launch(provider.url, "cpu-tiny", budget_mist=PRICE * 7200,
                                            verify=False)

        launched = await asyncio.gather(*(launch() for _ in range(args.sessions)))
        result["launch_all_s"] = round(time.monotonic() - t0, 1)
        print(f"{len(launched)} sessions running after {result['launch_all_s']} s", flush=True)
        reads.clear()
        idle_from = time.monotonic()
        ids = {s.id for s in launched}
        max_lag = 0.0
        while time.monotonic() - idle_from < args.idle_s:
            await asyncio.sleep(1)  # a benchmark's sampling period, not a synchronization
            for rec in provider.books():
                if rec.id in ids and rec.status == "running":
                    max_lag = max(max_lag, (rec.cost_mist - rec.voucher_mist) / PRICE)
        books = {r.id: r for r in provider.books() if r.id in ids}
        stopped = [r for r in books.values() if r.status != "running"]
        gaps = []
        for sid in ids:
            times = [t for t in provider.voucher_times.get(sid, []) if t >= idle_from]
            gaps += [b - a for a, b in zip(times, times[1:], strict=False)]
        result.update({
            "still_running": len(books) - len(stopped),
            "stopped_for_payment": sum("payment" in (r.reason or "") for r in stopped),
            "stopped_reasons": sorted({r.reason or "" for r in stopped}),
            "voucher_gap_max_s": round(max(gaps), 2) if gaps else None,
            "voucher_gap_p50_s": round(median(gaps), 2) if gaps else None,
            "unpaid_lag_max_s": round(max_lag, 1),
            "status_read_p50_ms": round(median(reads) * 1000, 1),
            "status_read_p95_ms": round(pct(reads, 95) * 1000, 1),
            "status_reads": len(reads),
        })
        limit = manager.poll_interval_s + 1
        result["goal_met"] = (result["stopped_for_payment"] == 0 and gaps != []
                              and max(gaps) <= limit)
        print(json.dumps(result), flush=True)  # before the teardown, which takes minutes
    finally:
        await manager.shutdown(stop_sessions=True)
        ledger.close()
        provider.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--idle-s", type=float, default=600)
    parser.add_argument("--runtime", choices=("docker", "process"), default="docker")
    parser.add_argument("--tls", choices=("on", "off"), default="on")
    parser.add_argument("--launch-concurrency", type=int, default=4)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=1))
    print(f"\n{result['sessions']} sessions, {result['runtime']} runtime, TLS {result['tls']}, "
          f"idle {result['idle_s']:.0f} s: {result['stopped_for_payment']} stopped for payment, "
          f"voucher gap max {result['voucher_gap_max_s']} s (goal <= "
          f"{result['poll_interval_s'] + 1:.0f} s), unpaid lag max {result['unpaid_lag_max_s']}"
          f" s, GET /sessions/<id> p50 {result['status_read_p50_ms']} ms / p95 "
          f"{result['status_read_p95_ms']} ms: goal {'met' if result['goal_met'] else 'MISSED'}")


if __name__ == "__main__":
    main()
