"""Issue #3 — Walnut kernels inside Jupyter Server vs local kernels vs the stock remote path.

    .venv/bin/python -m benchmarks.bench_server [--quick] [--json out.json]

All in one run, each path reached by a browser-style client over the server's kernel
websocket (JSON protocol, TCP_NODELAY on the client socket):

(a) local  — a local ipykernel through a Walnut-enabled `jupyter server` subprocess;
(b) walnut — a Walnut kernel through the same server: POST /walnut/sessions to a loopback
             `walnut-provider serve --runtime process` subprocess, then POST /api/kernels with
             the session's kernel_name (bridge in the server -> provider proxy -> gateway);
(c) stock  — a plain `jupyter server` WITHOUT Walnut, `--gateway-url` to a stock
             `jupyter kernelgateway` with token auth (`--GatewayClient.auth_token`).

Figures: execute round trip (median, p95; >= 300 trivial cells per path, alternating blocks
on fresh websockets) and 20 MB of printed output (100 kB flushed prints). The IOPub data
rate limit is raised to 1e12 B/s for (a) and (c) (`--ServerApp.iopub_data_rate_limit` on the
servers, `--ZMQChannelsWebsocketConnection.iopub_data_rate_limit` on the stock gateway) so
that throughput is measured, not the limiter; Walnut kernels are exempt from it by design.
Also: launch to first result for a new Walnut session and for a new kernel in a running one.
Goals: (b) RTT <= 1.5x (a) and >= 5x faster than (c); (b) throughput >= 60 % of (a).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_server.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    LOCALHOST,
    VENV_BIN,
    Figure,
    KernelWS,
    Procs,
    cpu_note,
    cpu_per_execute,
    find_child,
    free_port,
    http_json,
    isolated_jupyter_env,
    log,
    median,
    open_ws,
    pct,
    print_table,
    rtt_samples,
    run_main,
    start_provider,
    stream_throughput,
    wait_http,
    write_json,
)

GROUP = "#3 server"
CODE = "pass"
RATE = "1e12"


class Server:
    """A `jupyter server` subprocess and its REST/websocket endpoints."""

    def __init__(self, procs: Procs, name: str, base: Path, extra: list[str],
                 config: dict, env_extra: dict | None = None) -> None:
        self.name = name
        self.base = base
        self.port, self.token = free_port(), secrets.token_urlsafe(16)
        self.url = f"http://{LOCALHOST}:{self.port}"
        base.mkdir(parents=True, exist_ok=True)
        (base / "root").mkdir(exist_ok=True)
        env = isolated_jupyter_env(base)
        env.update(env_extra or {})
        # dict/list traits go in the (isolated) user config file: the command line would
        # need traitlets' key=value syntax for them
        (base / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        self.log_path = base / "server.log"
        self.proc = procs.start(name, [
            str(VENV_BIN / "jupyter"), "server", f"--ServerApp.ip={LOCALHOST}",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", "--ServerApp.open_browser=False",
            "--allow-root",
            f"--ServerApp.root_dir={base / 'root'}", *extra], env=env,
            log_path=self.log_path, cwd=base)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    def wait(self, timeout: float = 60.0) -> None:
        wait_http(self.url + "/api/status", timeout, self.proc, self.headers, self.log_path)

    async def call(self, method: str, path: str, body=None, timeout: float = 120.0):
        return await http_json(method, f"{self.url}/{path}", body, self.headers, timeout)

    async def start_kernel(self, name: str) -> str:
        return (await self.call("POST", "api/kernels", {"name": name}))["id"]

    async def ws(self, kernel_id: str) -> KernelWS:
        url = self.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        return KernelWS(await open_ws(url, self.headers))

    async def kernel_to_first_result(self, name: str) -> tuple[str, float]:
        t0 = time.perf_counter()
        kid = await self.start_kernel(name)
        ws = await self.ws(kid)
        try:
            r = await ws.execute("1+1", timeout=120)
        finally:
            ws.close()
        took = time.perf_counter() - t0
        if r.text.strip() != "2":
            raise RuntimeError(f"{self.name}: first execute gave {r.status} {r.text!r}")
        return kid, took


def zmq_rtt(connection_file: Path, count: int, warmup: int = 10) -> list[float]:
    """Round trips (ms) with jupyter_client straight on a kernel's ZMQ sockets (no websocket):
    for a local kernel the floor; for a Walnut kernel the bridge's local sockets."""
    from jupyter_client import BlockingKernelClient

    kc = BlockingKernelClient(connection_file=str(connection_file))
    kc.load_connection_file()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        samples = []
        for i in range(warmup + count):
            t0 = time.perf_counter()
            msg_id = kc.execute("pass")
            while kc.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
                pass
            while True:
                m = kc.get_iopub_msg(timeout=30)
                if (m["parent_header"].get("msg_id") == msg_id
                        and m["msg_type"] == "status"
                        and m["content"]["execution_state"] == "idle"):
                    break
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1000)
        return samples
    finally:
        kc.stop_channels()


async def rtt_blocks(paths: dict[str, tuple[Server, str]], count: int, blocks: int
                     ) -> dict[str, list[float]]:
    per = max(1, count // blocks)
    out: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(blocks):
        for key, (server, kid) in paths.items():
            ws = await server.ws(kid)
            try:
                out[key] += await rtt_samples(ws, per, warmup=10, code=CODE)
            finally:
                ws.close()
            await asyncio.sleep(0.05)
    return out


async def stream_runs(paths: dict[str, tuple[Server, str]], total: int, reps: int
                      ) -> tuple[dict[str, list[float]], dict[str, str]]:
    out: dict[str, list[float]] = {k: [] for k in paths}
    failures: dict[str, str] = {}
    for _ in range(reps):
        for key, (server, kid) in paths.items():
            if key in failures:
                continue
            ws = await server.ws(kid)
            try:
                await ws.execute(CODE)
                mbps, _, _ = await stream_throughput(ws, total, timeout=180)
                out[key].append(mbps)
            except Exception as exc:  # noqa: BLE001 - reported beside the figure
                failures[key] = f"{type(exc).__name__}: {str(exc)[:160]}"
            finally:
                ws.close()
    return out, failures


async def run(args) -> int:
    quick = args.quick
    count = args.count or (60 if quick else 330)
    blocks = 2 if quick else 6
    stream_mb = args.stream_mb or (5 if quick else 20)
    reps = 1 if quick else 3
    kernel_reps = 1 if quick else 3
    figures: list[Figure] = []
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="walnut-bench-server-"))
    try:
        log("starting a provider, a Walnut-enabled server, a stock gateway and a plain server")
        provider = start_provider(procs, tmp / "provider", "process", max_sessions=4)
        renter_home = tmp / "renter"
        renter_home.mkdir(mode=0o700)
        fund_renter(renter_home, provider.ledger_path)
        walnut = Server(procs, "walnut server", tmp / "walnut-server", [
            f"--WalnutApp.walnut_home={renter_home}",
            f"--ServerApp.iopub_data_rate_limit={RATE}",
        ], {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [provider.url]}},
            {"WALNUT_LEDGER": str(provider.ledger_path), "WALNUT_HOME": str(renter_home)})
        kg_port, kg_token = free_port(), secrets.token_urlsafe(16)
        kg_base = tmp / "stock-gateway"
        kg_base.mkdir()
        kg_log = kg_base / "kg.log"
        kg = procs.start("stock kernel gateway", [
            str(VENV_BIN / "jupyter"), "kernelgateway", f"--KernelGatewayApp.ip={LOCALHOST}",
            f"--KernelGatewayApp.port={kg_port}", "--KernelGatewayApp.port_retries=0",
            f"--KernelGatewayApp.auth_token={kg_token}",
            f"--ZMQChannelsWebsocketConnection.iopub_data_rate_limit={RATE}"],
            env=isolated_jupyter_env(kg_base), log_path=kg_log, cwd=kg_base)
        stock = Server(procs, "plain server", tmp / "plain-server", [
            f"--gateway-url=http://{LOCALHOST}:{kg_port}",
            f"--GatewayClient.auth_token={kg_token}",
            f"--ServerApp.iopub_data_rate_limit={RATE}",
        ], {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": False}}})
        walnut.wait()
        wait_http(f"http://{LOCALHOST}:{kg_port}/api/kernelspecs", 60, kg,
                  {"Authorization": f"token {kg_token}"}, kg_log)
        stock.wait()

        log("(b) launching a Walnut session through the server")
        t0 = time.perf_counter()
        session = await walnut.call("POST", "walnut/sessions",
                                    {"provider_url": provider.url, "shape": "cpu-small"})
        t_session = time.perf_counter() - t0
        kid_b, t_kernel = await walnut.kernel_to_first_result(session["kernel_name"])
        launch_total = time.perf_counter() - t0

        log("new kernels to first result: local, walnut (running session), stock gateway")
        kt: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        kid_a = kid_c = None
        for i in range(kernel_reps):
            for key, server, name in (("a", walnut, "python3"),
                                      ("b", walnut, session["kernel_name"]),
                                      ("c", stock, "python3")):
                kid, took = await server.kernel_to_first_result(name)
                kt[key].append(took)
                if i == 0 and key == "a":
                    kid_a = kid
                elif i == 0 and key == "c":
                    kid_c = kid
                else:
                    await server.call("DELETE", f"api/kernels/{kid}")
        paths = {"a": (walnut, kid_a), "b": (walnut, kid_b), "c": (stock, kid_c)}

        log(f"execute round trips: {count} per path in {blocks} alternating blocks")
        rtt = await rtt_blocks(paths, count, blocks)
        log("where the time goes: ZMQ straight to the kernel / bridge, CPU per execute")
        hops = await hop_breakdown(walnut, provider, kid_a, kid_b, 100 if quick else 300)
        log(f"stream throughput: {stream_mb} MB x {reps} per path")
        thr, failures = await stream_runs(paths, stream_mb * 1_000_000, reps)

        med = {k: median(v) for k, v in rtt.items()}
        p95 = {k: pct(v, 95) for k, v in rtt.items()}
        n = len(rtt["a"])
        figures += [
            Figure(GROUP, "(a) local kernel via server, RTT median", med["a"], "ms",
                   note=f"{n} executes per path; p95 {p95['a']:.2f} ms"),
            Figure(GROUP, "(b) Walnut kernel via server, RTT median", med["b"], "ms", med["a"],
                   "(a) local", "<= 1.5x (a)", med["b"] <= 1.5 * med["a"],
                   f"adds {med['b'] - med['a']:+.2f} ms to the local path"),
            Figure(GROUP, "(b) Walnut kernel via server, RTT p95", p95["b"], "ms", p95["a"],
                   "(a) local"),
            Figure(GROUP, "(c) stock --gateway-url path, RTT median", med["c"], "ms", med["b"],
                   "(b) Walnut", ">= 5x (b)", med["c"] >= 5 * med["b"],
                   f"p95 {p95['c']:.2f} ms; browser-style websocket through the plain server"),
        ]
        figures += hops
        tm = {k: (median(v) if v else None) for k, v in thr.items()}

        def tnote(k: str) -> str:
            runs = ", ".join(f"{x:.0f}" for x in thr[k])
            return (f"runs {runs} MB/s" if not failures.get(k) else
                    f"failed: {failures[k]}" + (f" (earlier runs {runs} MB/s)" if runs else ""))

        figures += [
            Figure(GROUP, f"(a) local kernel, stream {stream_mb} MB", tm["a"], "MB/s",
                   note=tnote("a"), skipped="" if tm["a"] else "failed"),
            Figure(GROUP, f"(b) Walnut kernel, stream {stream_mb} MB", tm["b"], "MB/s", tm["a"],
                   "(a) local", ">= 60% of (a)",
                   None if not (tm["a"] and tm["b"]) else tm["b"] >= 0.6 * tm["a"], tnote("b"),
                   skipped="" if tm["b"] else "failed"),
            Figure(GROUP, f"(c) stock gateway path, stream {stream_mb} MB", tm["c"], "MB/s",
                   tm["b"], "(b) Walnut", note=tnote("c"), skipped="" if tm["c"] else "failed"),
            Figure(GROUP, "(b) new Walnut session: launch to first result", launch_total, "s",
                   median(kt["a"]), "(a) new local kernel",
                   note=f"POST /walnut/sessions {t_session:.2f} s (channel, provider start, "
                        f"kernelspec), then kernel + websocket + first result {t_kernel:.2f} s"),
            Figure(GROUP, "(b) new kernel in a running Walnut session to first result",
                   median(kt["b"]), "s", median(kt["a"]), "(a) new local kernel",
                   note="runs " + ", ".join(f"{x:.2f}" for x in kt["b"]) + " s"),
            Figure(GROUP, "(c) new kernel via stock gateway path to first result",
                   median(kt["c"]), "s", median(kt["a"]), "(a) new local kernel",
                   note="runs " + ", ".join(f"{x:.2f}" for x in kt["c"]) + " s"),
        ]
        with_stop = await walnut.call("DELETE", f"walnut/sessions/{session['id']}")
        log(f"walnut session {with_stop['id']} {with_stop['status']}")
    finally:
        procs.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(figures)
    write_json(figures, args.json)
    return 0


async def hop_breakdown(walnut: Server, provider, kid_a: str, kid_b: str, count: int
                        ) -> list[Figure]:
    """Count the hops: RTT with no server websocket (jupyter_client on the kernel's ZMQ
    sockets: the local kernel itself, or the Walnut bridge inside the server), and CPU ms
    per execute in every process of each path."""
    out = []
    runtime = walnut.base / "runtime"
    zmq_med = {}
    for key, kid, label in (("a", kid_a, "local kernel (floor)"),
                            ("b", kid_b, "Walnut bridge in the server")):
        cf = runtime / f"kernel-{kid}.json"
        try:
            samples = await asyncio.wait_for(asyncio.to_thread(zmq_rtt, cf, count), 120)
            zmq_med[key] = median(samples)
            out.append(Figure(GROUP, f"({key}) RTT over ZMQ straight to the {label}",
                              zmq_med[key], "ms",
                              note=f"jupyter_client on {cf.name}, {count} executes, "
                                   f"p95 {pct(samples, 95):.2f} ms; no server websocket"))
        except Exception as exc:  # noqa: BLE001 - diagnostic figure only
            out.append(Figure(GROUP, f"({key}) RTT over ZMQ straight to the {label}", None,
                              "ms", skipped=f"{type(exc).__name__}: {str(exc)[:120]}"))
    if "a" in zmq_med and "b" in zmq_med:
        out[1].baseline, out[1].baseline_name = zmq_med["a"], "(a) ZMQ floor"
    server_pid = walnut.proc.pid
    kernels = {pid for pid in find_child(server_pid, "ipykernel")}
    gw = find_child(provider.proc.pid, "walnut_gateway")
    remote_kernels = find_child(gw[0], "ipykernel") if gw else []
    paths = {
        "a": {"client": os.getpid(), "server": server_pid,
              **({"kernel": sorted(kernels)[0]} if len(kernels) == 1 else {})},
        "b": {"client": os.getpid(), "server+bridge": server_pid,
              "provider": provider.proc.pid, **({"gateway": gw[0]} if gw else {}),
              **({"kernel": remote_kernels[0]} if remote_kernels else {})},
    }
    for key, kid in (("a", kid_a), ("b", kid_b)):
        ws = await walnut.ws(kid)
        try:
            per, med = await cpu_per_execute(ws, paths[key], count)
        finally:
            ws.close()
        out.append(Figure(GROUP, f"({key}) CPU per execute via server (all processes)",
                          sum(v for v in per.values() if v == v), "ms",
                          note=f"{count} executes, RTT median {med:.2f} ms; {cpu_note(per)}"))
    out[-1].baseline, out[-1].baseline_name = out[-2].value, "(a)"
    return out


def fund_renter(home: Path, ledger_path: Path) -> None:
    """The server's renter wallet, funded on the shared local ledger (issue #4 channels)."""
    from jupyter_walnut.common.keys import KeyPair

    key = KeyPair.generate()
    key.save(home / "wallet.key")
    try:
        from jupyter_walnut.ledger import LocalLedger
    except ImportError:
        return
    with LocalLedger(ledger_path) as led:
        led.fund(key.address, 10**15)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--count", type=int, help="executes per path (default 330)")
    p.add_argument("--stream-mb", type=int, help="MB printed per run (default 20)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_main(run, parse_args()))
