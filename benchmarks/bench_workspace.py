"""Workspace transfers (issue #16): upload and download throughput through the workspace API
as a fraction of a raw HTTPS copy over the same path, and the time to sync a 1,000-file
folder, cold and unchanged.

    .venv/bin/python -m benchmarks.bench_workspace            # 3 runs of 256 MiB each way
    .venv/bin/python -m benchmarks.bench_workspace --quick    # 1 run of 64 MiB

The default stack: `walnut-provider serve` in its own process with the Docker runtime over
TLS, the renter (this process) pinning its certificate, one session. Every byte goes renter
-> provider's TLS port -> its gateway proxy -> the session's gateway -> the workspace disk,
and back.

- `push`: `WorkspaceClient.push` of one file of random bytes: sha256 here, 64 MiB PUTs,
  the commit (the gateway hashes it again). Baseline: a raw HTTPS copy of the same bytes
  over the same path: one streamed PUT to the same upload route, no hash, no chunks, no
  commit: what the network path, TLS, the proxy and the gateway's disk write cost alone.
- `pull`: `WorkspaceClient.pull` of that file into a temporary name, hashed, renamed.
  Baseline: one raw HTTPS GET of the same download route streamed into a file.
- `sync 1,000 files`: a folder of 1,000 files of 1 KiB pushed to a new folder (cold), then
  again unchanged (the manifest says every hash matches: nothing is sent).

Goal: push and pull at >= 80% of the raw copy's throughput. Every run is printed, then the
median and the spread (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    Figure,
    Procs,
    log,
    median,
    print_table,
    run_main,
    start_provider,
    write_json,
)

GROUP = "#16 workspace"
GOAL = 0.8
PRICE = 2000  # MIST per second: cpu-small as `walnut-provider init` writes it


async def raw_put(client, path: Path, route: str) -> float:
    """One streamed HTTPS PUT of `path` to `route` of the session's gateway; seconds."""
    from tornado import httpclient

    size = path.stat().st_size

    async def produce(write) -> None:
        with open(path, "rb") as fh:
            while piece := fh.read(1 << 20):
                await write(piece)

    gw = client.gateway
    request = httpclient.HTTPRequest(
        f"{gw.base_url}/{route}?offset=0", method="PUT",
        headers={**gw.headers, "Content-Type": "application/octet-stream",
                 "Content-Length": str(size)}, body_producer=produce, request_timeout=600,
        ssl_options=await gw._ssl_options())
    http = httpclient.AsyncHTTPClient(force_instance=True)
    t0 = time.perf_counter()
    try:
        await http.fetch(request)
    finally:
        http.close()
    return time.perf_counter() - t0


async def raw_get(client, route: str, sink: Path) -> float:
    """One streamed HTTPS GET of `route` into `sink`; seconds."""
    from tornado import httpclient

    gw = client.gateway
    with open(sink, "wb") as fh:
        def write(chunk: bytes) -> None:  # a callback returning a value is awaited
            fh.write(chunk)

        request = httpclient.HTTPRequest(
            f"{gw.base_url}/{route}", headers=gw.headers, request_timeout=600,
            streaming_callback=write, ssl_options=await gw._ssl_options())
        http = httpclient.AsyncHTTPClient(force_instance=True, max_body_size=1 << 40)
        t0 = time.perf_counter()
        try:
            await http.fetch(request)
        finally:
            http.close()
    return time.perf_counter() - t0


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


async def bench(args) -> int:
    from jupyter_walnut.common.keys import KeyPair
    from jupyter_walnut.ledger import LocalLedger
    from jupyter_walnut.renter.provider_client import ProviderClient
    from jupyter_walnut.renter.workspace import WorkspaceClient

    mib = 64 if args.quick else args.mib
    runs = 1 if args.quick else args.runs
    tmp = Path(tempfile.mkdtemp(prefix="walnut-bench-workspace-"))
    procs = Procs()
    # the provider in a process of its own, as users run it: `walnut-provider serve`
    # (Docker runtime, its self-signed certificate, pinned), never sharing this one's GIL
    provider_proc = await asyncio.to_thread(start_provider, procs, tmp / "provider", "docker",
                                            tls=True)
    ledger = LocalLedger(provider_proc.ledger_path)
    figures: list[Figure] = []
    try:
        key = KeyPair.generate()
        ledger.fund(key.address, 10**12)
        channel = ledger.open_channel(key, provider_proc.address, key.public_key, 10**11,
                                      PRICE, 600).channel_id
        provider = ProviderClient(provider_proc.url, key)
        created = await provider.create_session(image="python", channel_id=channel)
        await provider.wait_running(created["id"], timeout=300)
        client = WorkspaceClient(ProviderClient(provider_proc.url, key), created["id"],
                                 created["access_token"])
        data = tmp / "data.bin"
        block = os.urandom(16 * 2**20)
        with open(data, "wb") as fh:
            for _ in range(mib // 16):
                fh.write(block)
        size = data.stat().st_size
        rates: dict[str, list[float]] = {k: [] for k in ("push", "raw put", "pull", "raw get")}
        for n in range(runs):
            t = await raw_put(client, data, f"walnut/fs/upload/raw-{n}.bin")
            rates["raw put"].append(size / t / 1e6)
            t0 = time.perf_counter()
            await client.push(data, f"api-{n}.bin")
            rates["push"].append(size / (time.perf_counter() - t0) / 1e6)
            (tmp / "pulled.bin").unlink(missing_ok=True)
            t0 = time.perf_counter()
            await client.pull(f"api-{n}.bin", tmp / "pulled.bin")
            rates["pull"].append(size / (time.perf_counter() - t0) / 1e6)
            t = await raw_get(client, f"walnut/fs/download/api-{n}.bin", tmp / "raw.out")
            rates["raw get"].append(size / t / 1e6)
            log(f"run {n}: " + ", ".join(f"{k} {v[-1]:.0f} MB/s" for k, v in rates.items()))
        for api, raw in (("push", "raw put"), ("pull", "raw get")):
            value, base = median(rates[api]), median(rates[raw])
            figures.append(Figure(
                GROUP, f"{api} {mib} MiB (MB/s)", value, "MB/s", base,
                f"raw HTTPS {raw.split()[1].upper()}", f">= {GOAL:.0%} of raw",
                value >= GOAL * base,
                f"runs {', '.join(f'{v:.0f}' for v in rates[api])} (spread "
                f"{spread(rates[api])}); raw {', '.join(f'{v:.0f}' for v in rates[raw])} "
                f"(spread {spread(rates[raw])})"))

        folder = tmp / "many"
        folder.mkdir()
        for i in range(1000):
            (folder / f"f{i:04d}.txt").write_bytes(os.urandom(1024))
        cold, warm = [], []
        for n in range(runs):
            t0 = time.perf_counter()
            sent = await client.push(folder, f"many-{n}")
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = await client.push(folder, f"many-{n}")
            warm.append(time.perf_counter() - t0)
            assert sent.files == 1000 and again.files == 0 and again.skipped == 1000
            log(f"run {n}: sync 1,000 files cold {cold[-1]:.2f} s, unchanged {warm[-1]:.2f} s")
        figures.append(Figure(GROUP, "sync 1,000 files, cold (s)", median(cold), "s",
                              note=f"runs {', '.join(f'{v:.2f}' for v in cold)}"))
        figures.append(Figure(GROUP, "sync 1,000 files, unchanged (s)", median(warm), "s",
                              note=f"runs {', '.join(f'{v:.2f}' for v in warm)}; "
                                   "nothing sent"))
    finally:
        await asyncio.to_thread(procs.close)
        ledger.close()
    print_table(figures)
    write_json(figures, args.json)
    return 0


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one run of 64 MiB")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--mib", type=int, default=256, help="file size (MiB, a multiple of 16)")
    p.add_argument("--runs", type=int, default=3)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_main(bench, parse()))
