"""Issue #2 — the provider node: proxy overhead, session start, concurrency, stream throughput.

    .venv/bin/python -m benchmarks.bench_provider [--quick] [--json out.json]

(a) execute round trip through the provider's proxy vs straight to the same session's kernel
    gateway (URL and internal token from the provider's session store), alternating blocks
    on fresh websockets; goal: the proxy adds < 1 ms to the median.
(b) session start to first result: POST /sessions -> running -> POST kernel -> websocket ->
    first execute result. Process runtime (goal < 3 s) and Docker runtime with the gateway
    image cached (goal < 5 s). Baseline: a stock `jupyter kernelgateway` subprocess started
    by hand, to the first result the same way.
(d) 20 MB of printed output through the proxy vs direct (goal >= 80 %).
(c) N concurrent sessions on one provider, each executing trivial cells in a closed loop
    (no think time); goal: p95 < 50 ms; held load and errors reported.

The provider is a `walnut-provider serve` subprocess on 127.0.0.1; the client (this process)
shares the machine's cores with the provider, the gateways and the kernels.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_provider.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from benchmarks._common import (  # noqa: E402
    LOCALHOST,
    VENV_BIN,
    Figure,
    KernelWS,
    Procs,
    ProviderProc,
    cpu_note,
    cpu_per_execute,
    cpu_seconds,
    create_session,
    find_child,
    free_port,
    http_json,
    log,
    median,
    open_ws,
    pct,
    print_table,
    rtt_samples,
    run_main,
    start_provider,
    stream_throughput,
    write_json,
)
from jupyter_walnut.common.keys import KeyPair  # noqa: E402
from jupyter_walnut.renter.provider_client import ProviderClient  # noqa: E402

GROUP = "#2 provider"
CODE = "pass"


class Session:
    """One provider session with one kernel, reachable through the proxy and directly."""

    def __init__(self, client: ProviderClient, provider: ProviderProc, sid: str, token: str,
                 kernel_id: str) -> None:
        self.client, self.provider = client, provider
        self.sid, self.token, self.kernel_id = sid, token, kernel_id
        self.gateway_url, self.gateway_token = provider.gateway(sid)

    async def proxied_ws(self) -> KernelWS:
        return KernelWS(await self.client.kernel_websocket(self.sid, self.token,
                                                           self.kernel_id))

    async def direct_ws(self) -> KernelWS:
        url = self.gateway_url.replace("http", "ws", 1) + \
            f"/api/kernels/{self.kernel_id}/channels"
        return KernelWS(await open_ws(url, {"Authorization": f"token {self.gateway_token}"}))


async def new_session(client: ProviderClient, provider: ProviderProc, timeout: float = 120.0
                      ) -> tuple[Session, dict[str, float]]:
    """Start a session and its first kernel; returns it and the phase times (s) from the
    POST to the first execute result."""
    t0 = time.perf_counter()
    created = await create_session(client, provider)
    sid, token = created["id"], created["access_token"]
    await client.wait_running(sid, timeout=timeout)
    t_running = time.perf_counter()
    kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})
    t_kernel = time.perf_counter()
    s = Session(client, provider, sid, token, kernel["id"])
    ws = await s.proxied_ws()
    t_ws = time.perf_counter()
    r = await ws.execute("1+1", timeout=timeout)
    t_first = time.perf_counter()
    ws.close()
    if r.status != "ok" or r.text.strip() != "2":
        raise RuntimeError(f"first execute gave {r.status} {r.text!r} {r.error}")
    return s, {"running": t_running - t0, "kernel": t_kernel - t_running,
               "websocket": t_ws - t_kernel, "first_result": t_first - t_ws,
               "total": t_first - t0}


async def stock_gateway_start(procs: Procs, tmp: Path) -> float:
    """Seconds from spawning a stock `jupyter kernelgateway` to the first execute result."""
    port, token = free_port(), secrets.token_urlsafe(16)
    base = tmp / f"kg-{port}"
    base.mkdir()
    from benchmarks._common import isolated_jupyter_env

    env = isolated_jupyter_env(base)
    t0 = time.perf_counter()
    proc = procs.start("stock kernel gateway", [
        str(VENV_BIN / "jupyter"), "kernelgateway", f"--KernelGatewayApp.ip={LOCALHOST}",
        f"--KernelGatewayApp.port={port}", "--KernelGatewayApp.port_retries=0",
        f"--KernelGatewayApp.auth_token={token}"], env=env, log_path=base / "kg.log", cwd=base)
    url = f"http://{LOCALHOST}:{port}"
    headers = {"Authorization": f"token {token}"}
    try:
        deadline = time.monotonic() + 60
        while True:  # same readiness probe and back-off as the provider's _wait_ready
            try:
                await http_json("GET", url + "/api/kernelspecs", headers=headers, timeout=5)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        kernel = await http_json("POST", url + "/api/kernels", {"name": "python3"},
                                 headers=headers)
        ws = KernelWS(await open_ws(url.replace("http", "ws") +
                                    f"/api/kernels/{kernel['id']}/channels", headers))
        r = await ws.execute("1+1")
        took = time.perf_counter() - t0
        ws.close()
        if r.text.strip() != "2":
            raise RuntimeError(f"stock gateway first execute gave {r.text!r}")
        return took
    finally:
        procs.stop(proc)


def session_pids(provider: ProviderProc, s: Session | None = None) -> dict[str, int]:
    """client, provider (the proxy), and the session's gateway and kernel processes."""
    pids = {"client": os.getpid(), "provider": provider.proc.pid}
    if s is not None:
        port = s.gateway_url.rsplit(":", 1)[1]
        for pid in find_child(provider.proc.pid, "walnut_gateway"):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.environ().get("WALNUT_GATEWAY_PORT") == port:
                    pids["gateway"] = pid
                    kernels = find_child(pid, "ipykernel")
                    if kernels:
                        pids["kernel"] = kernels[0]
    return pids


async def bench_cpu(provider: ProviderProc, s: Session, count: int) -> list[Figure]:
    """CPU ms per execute in each process, direct and proxied: where the time goes."""
    pids = session_pids(provider, s)
    out = []
    for kind in ("direct", "proxied"):
        ws = await (s.direct_ws() if kind == "direct" else s.proxied_ws())
        try:
            per, med = await cpu_per_execute(ws, pids, count)
        finally:
            ws.close()
        out.append(Figure(GROUP, f"(a) CPU per execute, {kind} (all processes)",
                          sum(v for v in per.values() if v == v), "ms",
                          note=f"{count} executes, RTT median {med:.2f} ms; {cpu_note(per)}"))
    out[1].baseline, out[1].baseline_name = out[0].value, "direct"
    return out


async def bench_proxy_overhead(s: Session, count: int, blocks: int) -> list[Figure]:
    per = max(1, count // blocks)
    direct: list[float] = []
    proxied: list[float] = []
    for _ in range(blocks):
        for kind, sink in (("direct", direct), ("proxied", proxied)):
            ws = await (s.direct_ws() if kind == "direct" else s.proxied_ws())
            try:
                sink += await rtt_samples(ws, per, warmup=10, code=CODE)
            finally:
                ws.close()
            await asyncio.sleep(0.05)
    d_med, p_med = median(direct), median(proxied)
    d95, p95 = pct(direct, 95), pct(proxied, 95)
    added = p_med - d_med
    note = (f"{len(proxied)} executes per path in {blocks} alternating blocks, fresh websocket "
            f"per block; proxy adds {added:+.2f} ms median, {p95 - d95:+.2f} ms p95; "
            f"direct p50/p95 {d_med:.2f}/{d95:.2f} ms")
    return [
        Figure(GROUP, "(a) execute RTT via proxy, median", p_med, "ms", d_med, "direct",
               "proxy adds < 1 ms", added < 1.0, note),
        Figure(GROUP, "(a) execute RTT via proxy, p95", p95, "ms", d95, "direct"),
    ]


async def bench_stream(s: Session, total: int, reps: int) -> list[Figure]:
    direct: list[float] = []
    proxied: list[float] = []
    for _ in range(reps):
        for kind, sink in (("direct", direct), ("proxied", proxied)):
            ws = await (s.direct_ws() if kind == "direct" else s.proxied_ws())
            try:
                await ws.execute(CODE)
                mbps, _, _ = await stream_throughput(ws, total)
                sink.append(mbps)
            finally:
                ws.close()
    d, p = median(direct), median(proxied)
    return [Figure(GROUP, f"(d) stream {total / 1e6:.0f} MB via proxy", p, "MB/s", d, "direct",
                   ">= 80% of direct", p >= 0.8 * d,
                   f"median of {reps} runs per path; 100 kB flushed prints; "
                   f"direct runs {', '.join(f'{x:.0f}' for x in direct)} MB/s, proxied "
                   f"{', '.join(f'{x:.0f}' for x in proxied)} MB/s")]


async def bench_start(client: ProviderClient, provider: ProviderProc, reps: int,
                      label: str, goal_s: float, baseline: float | None, baseline_name: str,
                      keep: list[Session]) -> list[Figure]:
    totals, phases = [], []
    for _ in range(reps):
        s, ph = await new_session(client, provider)
        totals.append(ph["total"])
        phases.append(ph)
        keep.append(s)
        await client.stop_session(s.sid)
    mid = phases[totals.index(sorted(totals)[len(totals) // 2])]
    note = (f"median of {reps}: runs {', '.join(f'{t:.2f}' for t in totals)} s; phases of the "
            f"median run: running {mid['running']:.2f} s, kernel {mid['kernel']:.2f} s, "
            f"websocket {mid['websocket'] * 1000:.0f} ms, first result "
            f"{mid['first_result'] * 1000:.0f} ms")
    m = median(totals)
    return [Figure(GROUP, f"(b) session start to first result, {label}", m, "s", baseline,
                   baseline_name, f"< {goal_s:g} s", m < goal_s, note)]


async def bench_concurrency(client: ProviderClient, provider: ProviderProc, n: int,
                            seconds: float) -> list[Figure]:
    log(f"(c) starting {n} sessions")
    t0 = time.perf_counter()
    created = []
    for _ in range(n):  # one payment channel each; the ledger file is one writer at a time
        created.append(await create_session(client, provider))
    await asyncio.gather(*(client.wait_running(c["id"], timeout=240) for c in created))
    sem = asyncio.Semaphore(4)  # 20 ipykernels at once on 2 cores hit start timeouts

    async def kernel(c):
        async with sem:
            k = await client.gateway(c["id"], c["access_token"], "POST", "api/kernels",
                                     {"name": "python3"})
            s = Session(client, provider, c["id"], c["access_token"], k["id"])
            for attempt in range(3):  # 20 kernels starting on 2 cores: the upgrade may wait
                try:
                    ws = await s.proxied_ws()
                    break
                except Exception:
                    if attempt == 2:
                        raise
            await rtt_samples(ws, 0, warmup=5, code=CODE)
            return ws

    wss = await asyncio.gather(*(kernel(c) for c in created))
    log(f"(c) {n} sessions with kernels ready in {time.perf_counter() - t0:.1f} s; "
        f"running for {seconds:.0f} s")
    samples: list[float] = []
    errors: list[str] = []
    per_session: list[int] = []
    groups = {"client": [os.getpid()], "provider": [provider.proc.pid],
              "gateways": find_child(provider.proc.pid, "walnut_gateway"),
              "kernels": find_child(provider.proc.pid, "ipykernel")}

    def group_cpu() -> dict[str, float]:
        flat = {f"{g}:{pid}": pid for g, pids in groups.items() for pid in pids}
        secs = cpu_seconds(flat)
        return {g: sum(secs[f"{g}:{pid}"] for pid in pids) for g, pids in groups.items()}

    cpu_before = group_cpu()
    start = time.perf_counter()

    async def loop(ws: KernelWS, sink: list, stop_at: float, period: float = 0.0,
                   offset: float = 0.0) -> None:
        done = 0
        next_at = time.perf_counter() + offset
        if offset:
            await asyncio.sleep(offset)
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                r = await ws.execute(CODE, timeout=30, keep_text=False)
                if r.status != "ok":
                    errors.append(f"status {r.status}")
                    continue
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(type(exc).__name__)
                return
            sink.append((time.perf_counter() - t) * 1000)
            done += 1
            if period:
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if not period:
            per_session.append(done)

    stop_at = start + seconds
    await asyncio.gather(*(loop(ws, samples, stop_at) for ws in wss))
    elapsed = time.perf_counter() - start
    cpu_after = group_cpu()
    cpu_per = {g: (cpu_after[g] - cpu_before[g]) * 1000 / max(1, len(samples)) for g in groups}
    busy = sum(cpu_after[g] - cpu_before[g] for g in groups) / elapsed
    # the same sessions at an interactive pace: each executes every `period` seconds
    paced: list[float] = []
    period = 0.2
    t_paced = time.perf_counter()
    await asyncio.gather(*(loop(ws, paced, t_paced + seconds, period, i * period / n)
                           for i, ws in enumerate(wss)))  # staggered, not in bursts of n
    paced_elapsed = time.perf_counter() - t_paced
    for ws in wss:
        ws.close()
    await asyncio.gather(*(client.stop_session(c["id"]) for c in created),
                         return_exceptions=True)
    load = len(samples) / elapsed
    p50, p95, p99 = median(samples), pct(samples, 95), pct(samples, 99)
    note = (f"{n} sessions, closed loop (each waits for its reply, no think time) for "
            f"{elapsed:.0f} s: {len(samples)} executes, held load {load:.0f} executes/s, "
            f"errors {len(errors)}{' ' + str(sorted(set(errors))) if errors else ''}; "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; per-session executes min/max "
            f"{min(per_session, default=0)}/{max(per_session, default=0)}; CPU ms per execute: "
            f"{cpu_note(cpu_per)}; these processes kept {busy:.2f} of "
            f"{os.cpu_count()} cores busy")
    return [
        Figure(GROUP, f"(c) {n} concurrent sessions, execute RTT p95", p95, "ms", None, "",
               "< 50 ms", p95 < 50.0 and not errors, note),
        Figure(GROUP, f"(c) {n} concurrent sessions, held load", load, "exec/s"),
        Figure(GROUP, f"(c) {n} sessions paced at {1 / period:.0f} exec/s each, RTT p95",
               pct(paced, 95), "ms", median(paced), "its median", "< 50 ms",
               pct(paced, 95) < 50.0,
               f"same sessions, each executing every {period * 1000:.0f} ms, starts staggered "
               f"(offered "
               f"{n / period:.0f} exec/s, held {len(paced) / paced_elapsed:.0f}): the "
               f"interactive reading of the goal; p99 {pct(paced, 99):.1f} ms"),
        Figure(GROUP, f"(c) {n} concurrent sessions, errors", float(len(errors)), "",
               None, "", "0", not errors),
    ]


def docker_ready(build: bool) -> tuple[bool, str]:
    from jupyter_walnut.provider.runtimes.docker import docker_available

    ok, reason = docker_available()
    if not ok:
        return False, reason
    import docker

    from jupyter_walnut.provider import image

    client = docker.from_env()
    try:
        tag = image.gateway_image_tag()
        if image._image_exists(client, tag):
            return True, tag
        base = f"{image.BASE_REPO}:{image.base_hash()}"
        if not build and not image._image_exists(client, base):
            return False, ("gateway base image not built (run `python -m "
                           "jupyter_walnut.provider.image`, about 2 min, or pass "
                           "--build-image)")
        log("building the gateway image layer (base cached)" if image._image_exists(
            client, base) else "building the gateway image from scratch")
        return True, image.ensure_gateway_image(client, progress=lambda s: log(s))
    except Exception as exc:  # noqa: BLE001 - a skip reason
        return False, f"gateway image unavailable: {exc}"
    finally:
        client.close()


async def guarded(name: str, goal: str, coro) -> list[Figure]:
    """A sub-benchmark's figures, or one skipped figure with the reason if it failed."""
    try:
        return await coro
    except Exception as exc:  # noqa: BLE001 - reported, the other figures go on
        log(f"{name}: failed: {type(exc).__name__}: {exc}")
        return [Figure(GROUP, name, None, "", goal=goal,
                       skipped=f"failed: {type(exc).__name__}: {str(exc)[:160]}")]


async def run(args) -> int:
    quick = args.quick
    count = args.count or (60 if quick else 360)
    blocks = 2 if quick else 6
    stream_mb = args.stream_mb or (5 if quick else 20)
    stream_reps = 1 if quick else 3
    start_reps = 1 if quick else 3
    conc = args.sessions or (5 if quick else 20)
    conc_s = args.seconds or (5.0 if quick else 15.0)
    figures: list[Figure] = []
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="walnut-bench-provider-"))
    client = None
    try:
        log("starting a provider (process runtime)")
        provider = start_provider(procs, tmp / "provider", "process", max_sessions=conc + 4)
        client = ProviderClient(provider.url, KeyPair.generate())

        log("(b) stock kernel gateway baseline")
        stock = [await stock_gateway_start(procs, tmp) for _ in range(start_reps)]
        stock_m = median(stock)
        log(f"(b) stock gateway: {', '.join(f'{x:.2f}' for x in stock)} s; process sessions")
        keep: list[Session] = []
        figures += await bench_start(client, provider, start_reps, "process runtime", 3.0,
                                     stock_m, "stock KG by hand", keep)

        log("(a) proxy overhead")
        s, _ = await new_session(client, provider)
        figures += await guarded("(a) execute RTT via proxy, median", "< 1 ms added",
                                 bench_proxy_overhead(s, count, blocks))
        figures += await guarded("(a) CPU per execute", "",
                                 bench_cpu(provider, s, 100 if quick else 300))
        log(f"(d) stream throughput, {stream_mb} MB")
        figures += await guarded(f"(d) stream {stream_mb} MB via proxy", ">= 80% of direct",
                                 bench_stream(s, stream_mb * 1_000_000, stream_reps))
        await client.stop_session(s.sid)

        figures += await guarded(f"(c) {conc} concurrent sessions, execute RTT p95", "< 50 ms",
                                 bench_concurrency(client, provider, conc, conc_s))
        procs.stop(provider.proc)

        if args.no_docker:
            ok, why = False, "--no-docker"
        else:
            log("(b) Docker runtime: checking the engine and the gateway image")
            ok, why = docker_ready(args.build_image)
        name = "(b) session start to first result, Docker runtime (image cached)"
        if ok:
            log(f"(b) Docker sessions (image {why})")
            dprov = start_provider(procs, tmp / "provider-docker", "docker", max_sessions=4)
            dclient = ProviderClient(dprov.url, KeyPair.generate())
            proc_fig = figures[0]
            try:
                figures += await bench_start(dclient, dprov, start_reps,
                                             "Docker runtime (image cached)", 5.0,
                                             proc_fig.value, "process runtime", [])
            except Exception as exc:  # noqa: BLE001 - reported as a skip with the reason
                log(f"Docker sessions failed: {exc}")
                figures.append(Figure(GROUP, name, None, "s", goal="< 5 s",
                                      skipped=f"failed: {str(exc)[:200]}"))
            procs.stop(dprov.proc)
        else:
            log(f"(b) Docker runtime skipped: {why}")
            figures.append(Figure(GROUP, name, None, "s", goal="< 5 s", skipped=why))
        figures.insert(1, Figure(GROUP, "(b) baseline: stock kernel gateway start to first "
                                 "result", stock_m, "s", note="`jupyter kernelgateway` "
                                 "subprocess, polled until ready, POST kernel, websocket, "
                                 f"first result; runs {', '.join(f'{x:.2f}' for x in stock)} s"))
    finally:
        procs.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(figures)
    write_json(figures, args.json)
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--count", type=int, help="executes per path for (a) (default 360)")
    p.add_argument("--stream-mb", type=int, help="MB printed for (d) (default 20)")
    p.add_argument("--sessions", type=int, help="concurrent sessions for (c) (default 20)")
    p.add_argument("--seconds", type=float, help="duration of (c) (default 15)")
    p.add_argument("--no-docker", action="store_true", help="skip the Docker runtime")
    p.add_argument("--build-image", action="store_true",
                   help="build the gateway base image if missing (minutes)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_main(run, parse_args()))
