"""Issue #19 — Slurm: session start to first result, Slurm jobs against local processes, and
how start time grows with the number of sessions queued at once.

    .venv/bin/python -m benchmarks.bench_slurm [--runs 3] [--queued 1 4 16] [--json out.json]

Needs a Slurm cluster (`source .ci/slurm.sh`: one node, two CPUs). One provider node in this
process (plain HTTP on 127.0.0.1, a local ledger in a temporary directory). A start is
measured from the signed create to the first result of `1 + 1` on the session's kernel
(queueing, the job's start, the gateway's start, a kernel's start, one execute). Queueing:
K one-CPU sessions are created at once on the two-CPU node; each is stopped after its first
result, which lets the next one run, so the last waits for all before it. Every run is
printed, then the median and the spread (min..max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_slurm.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_load import execute  # noqa: E402
from jupyter_walnut.common.keys import KeyPair  # noqa: E402
from jupyter_walnut.ledger import LocalLedger  # noqa: E402
from jupyter_walnut.provider.config import parse_config  # noqa: E402
from jupyter_walnut.provider.node import ProviderNode  # noqa: E402
from jupyter_walnut.provider.runtimes.process import ProcessRuntime  # noqa: E402
from jupyter_walnut.provider.runtimes.slurm import SlurmRuntime  # noqa: E402
from jupyter_walnut.renter.provider_client import ProviderClient  # noqa: E402

PRICE = 1  # MIST per second


def node_config(runtime: str, max_sessions: int):
    return parse_config({
        "provider": {"name": "bench-slurm", "runtime": runtime},
        "shapes": [{"name": "cpu-1", "gpus": 0, "cpus": 1, "memory_mb": 512,
                    "price_per_second_mist": PRICE}],
        "images": [{"name": "python", "reference": "builtin"}],
        "availability": {"max_sessions": max_sessions},
        "tls": {"mode": "off"},
        "settlement": {"grace_s": 3600},
        "slurm": {"bind": "127.0.0.1"},
    })


async def first_result(node, ledger, url: str) -> float:
    """Seconds from create to the first result of one session; the session is stopped."""
    key = KeyPair.generate()
    ledger.fund(key.address, 10**12)
    channel = ledger.open_channel(key, node.identity.address, key.public_key, 10**7, PRICE, 600)
    client = ProviderClient(url, key)
    t0 = time.perf_counter()
    created = await client.create_session(image="python", channel_id=channel.channel_id)
    sid, token = created["id"], created["access_token"]
    try:
        await client.wait_running(sid, timeout=600)
        kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})
        conn = await client.kernel_websocket(sid, token, kernel["id"])
        try:
            if not await asyncio.wait_for(execute(conn, "1 + 1", uuid.uuid4().hex), 60):
                raise RuntimeError("the first execute did not reply ok")
        finally:
            conn.close()
        return time.perf_counter() - t0
    finally:
        await client.stop_session(sid)


async def with_node(runtime: str, max_sessions: int, body):
    with tempfile.TemporaryDirectory(prefix="walnut-bench-slurm-") as tmp, \
            LocalLedger(Path(tmp) / "ledger.sqlite") as ledger:
        config = node_config(runtime, max_sessions)
        identity = KeyPair.generate()
        state = Path(tmp) / "provider"
        made = (SlurmRuntime(state / "slurm", "b" + identity.address[2:12], config.slurm,
                             config.availability.max_session_seconds)
                if runtime == "slurm" else ProcessRuntime(state / "sessions"))
        node = ProviderNode(config, identity, state, runtime=made, ledger=ledger)
        port = await node.start(host="127.0.0.1", port=0)
        try:
            return await body(node, ledger, f"http://127.0.0.1:{port}")
        finally:
            await node.stop(stop_sessions=True)


def spread(label: str, values: list[float]) -> dict:
    runs = " ".join(f"{v:.2f}" for v in values)
    print(f"  {label}: runs [{runs}] s; median {statistics.median(values):.2f} s, "
          f"spread {min(values):.2f}..{max(values):.2f} s", flush=True)
    return {"runs_s": values, "median_s": statistics.median(values),
            "min_s": min(values), "max_s": max(values)}


async def main_async(args) -> dict:
    results: dict = {"start_to_first_result": {}, "queued": {}}
    for runtime in ("process", "slurm"):
        async def serial(node, ledger, url):
            return [await first_result(node, ledger, url) for _ in range(args.runs)]

        times = await with_node(runtime, 2, serial)
        results["start_to_first_result"][runtime] = spread(
            f"{runtime} start to first result", times)
    for k in args.queued:
        async def burst(node, ledger, url, k=k):
            return list(await asyncio.gather(*(first_result(node, ledger, url)
                                                for _ in range(k))))

        times = sorted(await with_node("slurm", k, burst))
        results["queued"][str(k)] = spread(f"slurm, {k:2d} sessions created at once", times)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queued", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("sbatch") is None:
        print("bench_slurm: no Slurm cluster (sbatch not on PATH): source .ci/slurm.sh",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    results = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
