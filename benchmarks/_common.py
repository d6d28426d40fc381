"""Shared pieces of the Walnut benchmarks: statistics, a kernel websocket client, subprocess
management with guaranteed cleanup, figure records and table printing.

Every socket here is on 127.0.0.1. Timings never go into tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from tornado import httpclient, websocket

from jupyter_walnut.common.remote_kernel import new_message as message  # the one message builder

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MAX_MESSAGE_SIZE = 256 * 1024 * 1024
LOCALHOST = "127.0.0.1"


# --- statistics -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- figures --------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure beside its baseline.

    ratio = value / baseline (for latencies > 1 means slower than the baseline; for
    throughputs < 1 means slower). `goal` is the text of the goal, `met` True/False, or None
    when there is no goal or the figure was skipped.
    """

    group: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""
    skipped: str = ""  # reason, when not measured

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}

    @classmethod
    def from_json(cls, data: dict) -> Figure:
        data = {k: v for k, v in data.items() if k != "ratio"}
        return cls(**data)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value != value:
        return "nan"
    a = abs(value)
    if a >= 1000:
        text = f"{value:,.0f}"
    elif a >= 100:
        text = f"{value:.0f}"
    elif a >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    return f"{r:,.0f}x" if r >= 100 else f"{r:.2f}x" if r >= 0.01 else f"{r:.1e}x"


def verdict(f: Figure) -> str:
    if f.skipped:
        return "skipped"
    if f.met is None:
        return "—" if not f.goal else "?"
    return "met" if f.met else "MISSED"


def table_rows(figures: list[Figure]) -> list[list[str]]:
    rows = []
    for f in figures:
        value = f"skipped: {f.skipped}" if f.skipped else fmt(f.value, f.unit)
        base = fmt(f.baseline, f.unit) if f.baseline is not None else "—"
        if f.baseline_name and f.baseline is not None:
            base += f" ({f.baseline_name})"
        rows.append([f.group, f.name, value, base, fmt_ratio(f.ratio), f.goal or "—",
                     verdict(f)])
    return rows


HEADER = ["group", "figure", "value", "baseline", "ratio", "goal", "goal met"]


def print_table(figures: list[Figure], file=None) -> None:
    file = file or sys.stdout
    rows = [HEADER, *table_rows(figures)]
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(HEADER))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
              file=file)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=file)
    notes = [f for f in figures if f.note]
    if notes:
        print(file=file)
        for f in notes:
            print(f"  {f.group} / {f.name}: {f.note}", file=file)
    file.flush()


def write_json(figures: list[Figure], path: str | None, extra: dict | None = None) -> None:
    if not path:
        return
    Path(path).write_text(json.dumps({"figures": [f.to_json() for f in figures],
                                      **(extra or {})}, indent=1))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- machine --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = psutil.virtual_memory().total / 2**30
    versions = {}
    for mod in ("jupyter_server", "tornado", "ipykernel", "jupyter_client", "zmq",
                "kernel_gateway", "jupyter_walnut"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - description only
            versions[mod] = "not installed"
    docker_version = "no engine"
    with contextlib.suppress(Exception):
        import docker

        client = docker.from_env(timeout=5)
        docker_version = client.version().get("Version", "?")
        client.close()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{ram:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "os": _os_name(),
        "python": platform.python_version(),
        "docker engine": docker_version,
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


class Procs:
    """Subprocesses started by a benchmark; `close()` ends them and all their descendants
    (kernels, session gateways) even when they run in their own sessions."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen, object]] = []
        self._known: dict[int, psutil.Process] = {}
        self.closers: list = []  # extra cleanup callables, run last-in first-out

    def start(self, name: str, cmd: list[str], *, env: dict | None = None,
              log_path: Path | None = None, cwd: Path | None = None) -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc, out))
        return proc

    def snapshot(self) -> None:
        """Remember every current descendant (they may re-parent to init later)."""
        for _, proc, _ in self.procs:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(proc.pid)
                for child in root.children(recursive=True):
                    self._known.setdefault(child.pid, child)

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        self.snapshot()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def close(self) -> None:
        self.snapshot()
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                closer()
        for name, proc, out in reversed(self.procs):
            try:
                self.stop(proc)
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                log(f"cleanup of {name}: {exc}")
            if hasattr(out, "close"):
                out.close()
        time.sleep(0.2)
        for child in self._known.values():
            with contextlib.suppress(psutil.Error):
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    child.kill()
        self.procs.clear()
        self._known.clear()


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP behave like Ctrl-C, so `finally:` blocks clean up."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, handler)


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None,
              headers: dict | None = None, log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered"
                               f"\n{tail}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            # a readiness probe of our own node only; the benchmark's clients pin it
            context = ssl._create_unverified_context() if url.startswith("https:") else None
            with urllib.request.urlopen(req, timeout=2, context=context):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.05)  # polling a starting subprocess, bounded by the deadline


def wait_file(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before writing {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written within {timeout:.0f} s")
        time.sleep(0.05)


def isolated_jupyter_env(base: Path) -> dict[str, str]:
    """Environment for a Jupyter subprocess with its own data/runtime/config dirs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER_", "WALNUT_", "JPY_"))}
    for name in ("data", "runtime", "config"):
        (base / name).mkdir(parents=True, exist_ok=True)
    env.update(JUPYTER_DATA_DIR=str(base / "data"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
               JUPYTER_CONFIG_DIR=str(base / "config"), PYTHONUNBUFFERED="1",
               PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    return env


# --- HTTP + kernel websocket client ---------------------------------------------------------


async def http_json(method: str, url: str, body=None, headers: dict | None = None,
                    timeout: float = 60.0):
    data = None if body is None else json.dumps(body).encode()
    if method in ("POST", "PUT", "PATCH") and data is None:
        data = b""
    req = httpclient.HTTPRequest(url, method=method, body=data, request_timeout=timeout,
                                 headers={"Content-Type": "application/json",
                                          **(headers or {})})
    resp = await httpclient.AsyncHTTPClient().fetch(req, raise_error=False)
    if resp.code >= 400 or resp.code == 599:
        raise RuntimeError(f"{method} {url}: HTTP {resp.code} "
                           f"{(resp.body or b'').decode(errors='replace')[:300] or resp.error}")
    return json.loads(resp.body) if resp.body else None


async def open_ws(url: str, headers: dict | None = None, nodelay: bool = True,
                  subprotocols: list[str] | None = None, timeout: float = 30.0
                  ) -> websocket.WebSocketClientConnection:
    req = httpclient.HTTPRequest(url, headers=headers or {}, connect_timeout=timeout,
                                 request_timeout=timeout)
    conn = await asyncio.wait_for(websocket.websocket_connect(
        req, max_message_size=MAX_MESSAGE_SIZE, subprotocols=subprotocols,
        ping_interval=None), timeout)
    if nodelay:
        conn.protocol.stream.set_nodelay(True)
    return conn


@dataclass
class ExecOutcome:
    status: str = ""
    stdout_bytes: int = 0
    text: str = ""
    error: dict | None = None
    stream_messages: int = 0
    extras: list = field(default_factory=list)


class KernelWS:
    """A JSON-protocol kernel websocket client (the browser's legacy wire format)."""

    def __init__(self, conn: websocket.WebSocketClientConnection) -> None:
        self.conn = conn
        self.session = uuid.uuid4().hex

    async def execute(self, code: str, timeout: float = 60.0, keep_text: bool = True
                      ) -> ExecOutcome:
        msg = message("execute_request", {"code": code, "silent": False,
                                          "store_history": False, "user_expressions": {},
                                          "allow_stdin": False, "stop_on_error": True},
                      self.session)
        msg_id = msg["header"]["msg_id"]
        await self.conn.write_message(json.dumps(msg))
        out = ExecOutcome()
        reply_seen = idle_seen = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (reply_seen and idle_seen):
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"execute did not finish within {timeout:.0f} s")
            raw = await asyncio.wait_for(self.conn.read_message(), left)
            if raw is None:
                raise ConnectionError(f"websocket closed: {self.conn.close_code} "
                                      f"{self.conn.close_reason}")
            m = json.loads(raw)
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = m["header"]["msg_type"], m["content"]
            if kind == "stream":
                text = content.get("text", "")
                out.stdout_bytes += len(text)
                out.stream_messages += 1
                if keep_text:
                    out.text += text
            elif kind == "execute_result":
                out.text += content["data"].get("text/plain", "")
            elif kind == "error":
                out.error = content
            elif kind == "status" and content["execution_state"] == "idle":
                idle_seen = True
            elif kind == "execute_reply":
                out.status = content["status"]
                reply_seen = True
        return out

    def close(self) -> None:
        self.conn.close()


async def rtt_samples(ws: KernelWS, count: int, warmup: int = 10, code: str = "1",
                      timeout: float = 30.0) -> list[float]:
    """Round trips (ms) of `count` trivial executes: send to execute_reply + idle."""
    for _ in range(warmup):
        r = await ws.execute(code, timeout)
        if r.status != "ok":
            raise RuntimeError(f"warm-up execute failed: {r.error}")
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        r = await ws.execute(code, timeout, keep_text=False)
        samples.append((time.perf_counter() - t0) * 1000)
        if r.status != "ok":
            raise RuntimeError(f"execute failed: {r.error}")
    return samples


def stream_code(total_bytes: int, chunk: int = 100_000) -> str:
    """Prints `total_bytes` (incl. newlines) in flushed chunks of `chunk` bytes, so no single
    message exceeds tornado's 10 MiB default frame cap on any stock hop."""
    n = max(1, total_bytes // chunk)
    return (f"import sys\n_line = 'x' * {chunk - 1} + '\\n'\nfor _ in range({n}):\n"
            "    sys.stdout.write(_line); sys.stdout.flush()\n")


async def stream_throughput(ws: KernelWS, total_bytes: int, timeout: float = 120.0
                            ) -> tuple[float, int, float]:
    """(MB/s, bytes received, seconds) for one execute printing `total_bytes`."""
    code = stream_code(total_bytes)
    expected = (total_bytes // 100_000) * 100_000
    t0 = time.perf_counter()
    r = await ws.execute(code, timeout, keep_text=False)
    secs = time.perf_counter() - t0
    if r.status != "ok":
        raise RuntimeError(f"stream execute failed: {r.error}")
    if r.stdout_bytes != expected:
        raise RuntimeError(f"received {r.stdout_bytes} of {expected} bytes of output "
                           f"(rate limit or dropped messages?)")
    return r.stdout_bytes / secs / 1e6, r.stdout_bytes, secs


def run_main(coro_fn, args) -> int:
    """asyncio.run with Ctrl-C/SIGTERM turned into a clean exit code."""
    install_signal_handlers()
    try:
        return asyncio.run(coro_fn(args)) or 0
    except KeyboardInterrupt:
        log("interrupted; subprocesses cleaned up")
        return 130


# --- a provider node as a subprocess --------------------------------------------------------


@dataclass
class ProviderProc:
    url: str
    home: Path
    proc: subprocess.Popen
    log_path: Path
    provider_id: str
    ledger_path: Path
    address: str = ""

    def gateway(self, session_id: str) -> tuple[str, str]:
        """(gateway URL, internal gateway token) of a session, from the provider's store."""
        import sqlite3

        db = sqlite3.connect(f"file:{self.home / 'state' / 'provider.sqlite'}?mode=ro",
                             uri=True, timeout=10)
        try:
            row = db.execute("SELECT gateway_url, gateway_token FROM sessions WHERE id = ?",
                             (session_id,)).fetchone()
        finally:
            db.close()
        if row is None or not row[0]:
            raise RuntimeError(f"session {session_id} has no gateway in the provider's store")
        return row[0], row[1]


def start_provider(procs: Procs, home: Path, runtime: str = "process", max_sessions: int = 4,
                   timeout: float = 60.0, ledger_path: Path | None = None,
                   tls: bool = False) -> ProviderProc:
    """`walnut-provider --home D init --port 0`, then `serve --port 0 --port-file F`.

    The provider and the benchmark's renters share one local ledger file ($WALNUT_LEDGER)
    when the provider requires payment channels. `tls`: its self-signed certificate, as
    users run it; the URL then carries the pin (`https://...#sha256=<hex>`)."""
    import re

    from jupyter_walnut.common.keys import KeyPair

    cli = str(VENV_BIN / "walnut-provider")
    ledger_path = ledger_path or home.parent / "ledger.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALNUT_", "JUPYTER_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["WALNUT_LEDGER"] = str(ledger_path)
    init = subprocess.run([cli, "--home", str(home), "init", "--port", "0", "--name",
                           "bench-node"], check=True, env=env, capture_output=True, text=True,
                          timeout=60)
    pin = re.search(r"sha256=([0-9a-f]{64})", init.stdout + init.stderr)
    config = home / "provider.toml"
    text = config.read_text()
    text = re.sub(r"(?m)^max_sessions = \d+", f"max_sessions = {max_sessions}", text)
    text = re.sub(r'(?m)^runtime = "auto"', f'runtime = "{runtime}"', text)
    # the benchmark's raw clients sign no vouchers: do not stop their sessions for it
    text = re.sub(r"(?m)^grace_s = \d+", "grace_s = 86400", text)
    if not tls:
        text = plain_http_on_loopback(text)
    config.write_text(text)
    port_file = home / "port"
    log_path = home / "provider.log"
    proc = procs.start(f"provider ({runtime})",
                       [cli, "--home", str(home), "serve", "--port", "0", "--port-file",
                        str(port_file), "--runtime", runtime, "--log-format", "text",
                        "--stop-sessions-on-exit"], env=env, log_path=log_path)
    port = wait_file(port_file, timeout, proc)
    url = f"{'https' if tls else 'http'}://{LOCALHOST}:{port}"
    wait_http(url + "/api/v1/health", timeout, proc, log_path=log_path)
    if tls:
        if pin is None:
            raise RuntimeError("walnut-provider init printed no certificate fingerprint")
        url += f"#sha256={pin.group(1)}"
    address = KeyPair.load(home / "identity.key").address
    provider_id = address[:18]
    if runtime == "docker":
        procs.closers.append(lambda: remove_containers(provider_id))
    return ProviderProc(url, home, proc, log_path, provider_id, ledger_path, address)


def plain_http_on_loopback(text: str) -> str:
    """TLS off (`[tls] mode = "off"`, allowed on loopback only) where the provider knows TLS:
    the goals compare hops on 127.0.0.1, and every path measured here is plain HTTP."""
    import re
    from dataclasses import fields

    from jupyter_walnut.provider.config import ProviderConfig

    if "tls" not in {f.name for f in fields(ProviderConfig)}:
        return text
    if re.search(r"(?m)^\[tls\]", text):
        head, _, tail = text.partition("[tls]")
        if re.search(r'(?m)^mode = "[^"]*"', tail.split("\n[", 1)[0]):
            tail = re.sub(r'(?m)^mode = "[^"]*"', 'mode = "off"', tail, count=1)
        else:
            tail = '\nmode = "off"' + tail
        return head + "[tls]" + tail
    return text + '\n[tls]\nmode = "off"\n'


async def create_session(client, provider: ProviderProc, shape: str = "cpu-small",
                         seconds: int = 3600) -> dict:
    """POST /sessions as `client`'s key; opens a funded payment channel on the shared local
    ledger first when the provider's offer asks for one (issue #4 settlement)."""
    status = await client.status()
    extra = {}
    if "settlement" in status:
        from jupyter_walnut.ledger import LocalLedger

        offer = next(s for s in status["shapes"] if s["name"] == shape)
        price = offer["price_mist_per_second"]
        policy = status["settlement"]
        deposit = price * max(seconds, policy.get("min_prepaid_seconds", 0))
        period = max(600, policy.get("min_challenge_period_s", 0))
        key = client.key
        with LocalLedger(provider.ledger_path) as led:
            if led.balance(key.address) < deposit:
                led.fund(key.address, deposit * 100)
            channel = led.open_channel(key, status["provider_address"], key.public_key,
                                       deposit, price, period)
        extra["channel_id"] = channel.channel_id
    return await client.create_session(image="python", shape=shape, max_seconds=seconds,
                                       **extra)


def remove_containers(provider_id: str) -> None:
    """Fallback cleanup: containers, networks and volumes a provider left behind."""
    import docker

    client = docker.from_env(timeout=30)
    try:
        label = f"walnut.provider={provider_id}"
        for c in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(Exception):
                c.remove(force=True)
        for n in client.networks.list(filters={"label": label}):
            with contextlib.suppress(Exception):
                n.remove()
        for v in client.volumes.list(filters={"label": label}):
            with contextlib.suppress(Exception):
                v.remove(force=True)
    finally:
        client.close()


# --- where the time goes: CPU per execute, per process --------------------------------------


def find_child(parent_pid: int, needle: str) -> list[int]:
    """Descendants of `parent_pid` whose command line contains `needle`."""
    try:
        children = psutil.Process(parent_pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for c in children:
        with contextlib.suppress(psutil.Error):
            if needle in " ".join(c.cmdline()):
                out.append(c.pid)
    return out


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = float("nan")
    return out


async def cpu_per_execute(ws: KernelWS, pids: dict[str, int], count: int
                          ) -> tuple[dict[str, float], float]:
    """(CPU ms per execute for each named process, median RTT ms) over `count` executes."""
    await rtt_samples(ws, 0, warmup=10, code="pass")
    before = cpu_seconds(pids)
    samples = await rtt_samples(ws, count, warmup=0, code="pass")
    after = cpu_seconds(pids)
    return ({k: (after[k] - before[k]) * 1000 / count for k in pids}, median(samples))


def cpu_note(per: dict[str, float]) -> str:
    total = sum(v for v in per.values() if v == v)
    return ", ".join(f"{k} {v:.2f}" for k, v in per.items()) + \
        f" (sum {total:.2f} ms CPU per execute)"
