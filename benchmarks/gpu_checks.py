"""The GPU node's end-to-end checks, shared by `benchmarks/gpu_check.py` and `tests/test_gpu.py`.

A real stack on one machine: `walnut-provider init` and `serve --runtime process` (HTTPS
with its self-signed certificate, pinned by the renter), a renter Jupyter Server with the
Walnut extension, and a client that drives that server's kernels REST API and websocket
the way JupyterLab does. Every check adds lines to `Results`: a figure, what was expected
and PASS/FAIL (INFO for figures without a bar, SKIP only where this machine has no GPU).
With `gpu=False` every step that does not need a GPU runs the same way (the dry run).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from jupyter_walnut.common import probe
from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.remote_kernel import RemoteKernel
from jupyter_walnut.common.tls import fingerprint, generate_self_signed, server_context
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.provider import hardware
from jupyter_walnut.provider.config import parse_config
from jupyter_walnut.provider.node import ProviderNode
from jupyter_walnut.provider.runtimes.process import ProcessRuntime
from jupyter_walnut.renter.manager import RenterError, RenterManager

FUNDS_MIST = 10**12
BUDGET_SECONDS = 600  # each session's deposit buys this long; the check needs far less
START_TIMEOUT_S = 120.0
TRAINING_STEPS = 300
LOSS_TOLERANCE = 0.05  # relative, per point of the curve: same seed, same GPU, same kernels
LOSS_FLOOR = 0.01  # below this a loss is judged absolutely: near zero it only jitters
USAGE_TIMEOUT_S = 60.0


@dataclass
class Line:
    check: str
    figure: str
    value: object
    expected: str
    ok: bool | None  # None: a figure without a bar (INFO) or a step this machine cannot run

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return "SKIP" if str(self.value).startswith("skipped") else "INFO"
        return "PASS" if self.ok else "FAIL"


@dataclass
class Results:
    lines: list[Line] = field(default_factory=list)
    echo: Callable[[str], None] | None = print
    # rewritten after every line, so a run stopped at its time limit still leaves a report
    on_line: Callable[[Results], None] | None = None

    def add(self, check: str, figure: str, value: object, expected: str,
            ok: bool | None) -> bool | None:
        line = Line(check, figure, value, expected, ok)
        self.lines.append(line)
        if self.echo is not None:
            self.echo(f"{line.verdict:4}  [{check}] {figure}: {value}  (expected {expected})")
        if self.on_line is not None:
            self.on_line(self)
        return ok

    def fail(self, check: str, figure: str, exc: BaseException) -> None:
        self.add(check, figure, f"error: {exc.__class__.__name__}: {exc}", "no error", False)

    @property
    def failed(self) -> list[Line]:
        return [line for line in self.lines if line.ok is False]

    def markdown(self, title: str, machine: dict) -> str:
        out = [f"# {title}", "", "| | |", "|---|---|"]
        out += [f"| {key} | {value} |" for key, value in machine.items()]
        out += ["", "| check | figure | value | expected | result |", "|---|---|---|---|---|"]
        cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        out += [f"| {x.check} | {cell(x.figure)} | {cell(x.value)} | {cell(x.expected)} | "
                f"{x.verdict} |" for x in self.lines]
        passed = sum(1 for x in self.lines if x.ok)
        out += ["", f"{passed} passed, {len(self.failed)} failed, "
                    f"{sum(1 for x in self.lines if x.ok is None)} info/skipped."]
        return "\n".join(out) + "\n"


def machine_info() -> dict:
    """The machine and versions, for the report's header."""
    gpus, driver, cuda, error = hardware.detect_gpus()
    info = {"host": platform.node(), "machine": platform.machine(),
            "python": platform.python_version(), "gpus": ", ".join(
                f"{g.model} ({g.memory_mb} MiB)" for g in gpus) or f"none ({error})",
            "driver": driver or "-", "cuda (driver)": cuda or "-"}
    try:
        import torch  # optional: the GPU machine has it preinstalled

        info["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda})"
    except ImportError:
        info["torch"] = "not installed"
    from jupyter_walnut import __version__

    info["jupyter-walnut"] = __version__
    return info


# --- 1. detection ------------------------------------------------------------------------

def check_detection(results: Results, provider_home: Path, gpu: bool) -> None:
    """What `init` found and wrote, and whether NVML and nvidia-smi tell the same story."""
    nvml = hardware.detect_gpus()
    config = tomllib.loads((provider_home / "provider.toml").read_text())
    gpu_shapes = [s["name"] for s in config["shapes"] if s["gpus"] > 0]
    if not gpu:
        results.add("1 detection", "GPUs through NVML", len(nvml[0]), "0 on a CPU machine",
                    not nvml[0])
        results.add("1 detection", "GPU shapes written by init", gpu_shapes or "none",
                    "none without a GPU", not gpu_shapes)
        return
    gpus, driver, cuda, error = nvml
    results.add("1 detection", "GPUs through NVML", len(gpus) if gpus else error, ">= 1",
                bool(gpus))
    if not gpus:
        return
    first = gpus[0]
    results.add("1 detection", "model", first.model, "an NVIDIA model name",
                first.model.upper().startswith("NVIDIA"))
    results.add("1 detection", "memory (MiB)", first.memory_mb, "> 0", first.memory_mb > 0)
    results.add("1 detection", "driver / CUDA", f"{driver} / {cuda}", "both reported",
                bool(driver and cuda))
    results.add("1 detection", "GPU shapes written by init", gpu_shapes, "gpu-1",
                "gpu-1" in gpu_shapes)
    smi = hardware.detect_gpus_smi("nvidia-smi is not on PATH")
    same = len(gpus) == len(smi[0]) and all(
        (a.index, a.uuid, a.model) == (b.index, b.uuid, b.model)
        and abs(a.memory_mb - b.memory_mb) <= 1  # bytes rounded down vs MiB as printed
        for a, b in zip(gpus, smi[0], strict=False))
    results.add("1 detection", "nvidia-smi agrees with NVML (index, uuid, model, MiB)",
                "yes" if same else f"no: {smi[0] or smi[3]}", "yes", same)
    results.add("1 detection", "nvidia-smi driver / CUDA", f"{smi[1]} / {smi[2]}",
                f"{driver} / {cuda}", (smi[1], smi[2]) == (driver, cuda))


# --- the stack: provider node and renter server, as separate processes ---------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(what: str, condition: Callable[[], object], timeout: float,
               proc: subprocess.Popen | None = None) -> object:
    """Poll `condition` until it is truthy; a child that exits first is an error."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited early (code {proc.returncode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:.0f}s")
        time.sleep(0.2)  # polling a child process, bounded by the deadline


@dataclass
class Stack:
    root: Path
    env: dict
    provider_home: Path
    provider_url: str  # with the certificate pin, as renters name it
    provider_base: str
    provider_context: ssl.SSLContext
    server_base: str
    token: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def provider_status(self) -> dict:
        with urllib.request.urlopen(f"{self.provider_base}/api/v1/status", timeout=20,
                                    context=self.provider_context) as resp:
            return json.load(resp)

    def api(self, method: str, path: str, body: dict | None = None,
            timeout: float = 300) -> dict:
        """The renter server's REST API, as the sidebar calls it; errors carry the message."""
        request = urllib.request.Request(
            f"{self.server_base}/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} /{path} -> {exc.code}: {exc.read()[:300]!r}") \
                from None

    def kernel(self, name: str) -> RemoteKernel:
        return RemoteKernel(self.server_base, {"Authorization": f"token {self.token}"},
                            timeout=START_TIMEOUT_S)

    def launch(self, shape: str) -> dict:
        status = self.provider_status()
        price = next(s for s in status["shapes"] if s["name"] == shape)["price_mist_per_second"]
        return self.api("POST", "walnut/sessions", {
            "provider_url": self.provider_url, "shape": shape,
            "budget_mist": price * BUDGET_SECONDS})

    def stop(self) -> None:
        for proc in reversed(self.procs):  # the server first: it stops and settles sessions
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def init_provider(root: Path, env: dict) -> Path:
    home = root / "provider"
    subprocess.run([_bin("walnut-provider"), "--home", str(home), "init", "--name",
                    "gpu-check"], env=env, check=True, capture_output=True, text=True,
                   timeout=120)
    return home


def start_stack(root: Path) -> Stack:
    """init + serve (process runtime, TLS) + a renter Jupyter Server with Walnut."""
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "WALNUT_HOME": str(root / "renter"),
           "WALNUT_LEDGER": str(root / "ledger.sqlite"),
           "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
           "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"), "PYTHONUNBUFFERED": "1"}
    provider_home = init_provider(root, env)
    procs: list[subprocess.Popen] = []

    def spawn(name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        return proc

    port_file = root / "provider.port"
    provider = spawn("provider", [_bin("walnut-provider"), "--home", str(provider_home),
                                  "serve", "--port", "0", "--port-file", str(port_file),
                                  "--runtime", "process", "--log-format", "text",
                                  "--stop-sessions-on-exit"])
    try:
        port = wait_until("the provider", lambda: port_file.exists() and port_file.read_text(),
                          START_TIMEOUT_S, provider)
        cert = provider_home / "tls" / "cert.pem"
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # pinned by fingerprint, like the renter does
        base = f"https://127.0.0.1:{port}"
        pinned = f"{base}#sha256={fingerprint(cert.read_bytes())}"
        key = KeyPair.generate()
        (root / "renter").mkdir(exist_ok=True)
        key.save(root / "renter" / "wallet.key")
        with LocalLedger(root / "ledger.sqlite") as ledger:
            ledger.fund(key.address, FUNDS_MIST)
        env["WALNUT_PROVIDERS"] = pinned
        token, server_port = secrets.token_hex(24), free_port()
        (root / "notebooks").mkdir(exist_ok=True)
        server = spawn("jupyter-server", [
            _bin("jupyter"), "server", "--no-browser", "--allow-root", f"--port={server_port}",
            "--ip=127.0.0.1", f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root / 'notebooks'}", "--WalnutApp.challenge_period=120",
            "--WalnutApp.poll_interval=1"])
        stack = Stack(root, env, provider_home, pinned, base, context,
                      f"http://127.0.0.1:{server_port}", token, procs)

        def server_ready() -> bool:
            try:
                return bool(stack.api("GET", "walnut/status", timeout=5))
            except (RuntimeError, OSError, ValueError):
                return False

        wait_until("the renter Jupyter Server", server_ready, START_TIMEOUT_S, server)
        return stack
    except BaseException:
        Stack(root, env, provider_home, "", "", ssl.create_default_context(), "", "",
              procs).stop()
        raise


# --- kernels through the renter's server --------------------------------------------------

class KernelSession:
    """One kernel of a Walnut session, opened through the renter server on one event loop."""

    def __init__(self, stack: Stack, kernel_name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.kernel = stack.kernel(kernel_name)
        self.kernel_name = kernel_name

    def __enter__(self) -> KernelSession:
        self.loop.run_until_complete(self.kernel.start(self.kernel_name))
        return self

    def execute(self, code: str, timeout: float = 300.0) -> str:
        async def go() -> str:
            result = await self.kernel.execute(code, timeout=timeout)
            if result.error:
                raise RuntimeError(f"the cell raised {result.error.get('ename')}: "
                                   f"{result.error.get('evalue')}")
            return result.stdout
        return self.loop.run_until_complete(go())

    def start_execute(self, code: str, timeout: float = 300.0) -> asyncio.Task:
        """Start a cell and return at once; `finish(task)` waits for its stdout."""
        return self.loop.create_task(self.kernel.execute(code, timeout=timeout))

    def finish(self, task: asyncio.Task) -> str:
        result = self.loop.run_until_complete(task)
        if result.error:
            raise RuntimeError(f"the cell raised {result.error.get('ename')}")
        return result.stdout

    def interrupt(self) -> None:
        self.loop.run_until_complete(self.kernel.interrupt())

    def pump(self, seconds: float) -> None:
        """Let the loop run (a started cell makes progress) for at most `seconds`."""
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def __exit__(self, *exc) -> None:
        self.loop.run_until_complete(self.kernel.shutdown())
        self.loop.close()


def last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the cell printed no JSON ({stdout[-200:]!r})")
    return json.loads(lines[-1])


DEVICES_CELL = """
import json, os
info = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
try:
    import torch
    n = torch.cuda.device_count()
    info["torch_devices"] = n
    info["torch_uuids"] = [str(getattr(torch.cuda.get_device_properties(i), "uuid", ""))
                           for i in range(n)]
except ImportError:
    info["torch_devices"] = None
print(json.dumps(info))
"""


BYPASS_CELL = """
import json, os, subprocess, sys
env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                     env=env, capture_output=True, text=True, timeout=120).stdout.strip()
print(json.dumps({"torch_devices": int(out or 0)}))
"""


# --- 2. isolation: a gpu-1 session has its GPU, a CPU session none ------------------------

def check_devices(results: Results, stack: Stack, session: dict, kernel: KernelSession,
                  gpu: bool) -> None:
    info = last_json(kernel.execute(DEVICES_CELL))
    shape = session["shape"]
    if not session["gpus"]:
        torch_n = info["torch_devices"]
        results.add("2 isolation", f"{shape}: CUDA devices in torch",
                    torch_n if torch_n is not None else "torch not installed", "0",
                    torch_n in (0, None))
        results.add("2 isolation", f"{shape}: CUDA_VISIBLE_DEVICES",
                    repr(info["cuda_visible_devices"]), "''",
                    info["cuda_visible_devices"] == "")
        if gpu:  # the renter's code may clear the variable; only Docker's device list holds
            bypass = last_json(kernel.execute(BYPASS_CELL))
            results.add("2 isolation", f"{shape}: GPUs after clearing CUDA_VISIBLE_DEVICES",
                        bypass["torch_devices"], "the process runtime isolates nothing "
                        "(docs/threat-model.md); Docker sessions get no device", None)
        return
    results.add("2 isolation", f"{shape}: torch.cuda.device_count()", info["torch_devices"],
                "1", info["torch_devices"] == 1)
    hw = stack.provider_status()["hardware"]["gpus"]
    visible = (info["cuda_visible_devices"] or "").split(",")
    assigned = [g["uuid"] for g in hw if str(g["index"]) in visible]
    seen = ["GPU-" + u if u and not u.startswith("GPU-") else u
            for u in info.get("torch_uuids", [])]
    results.add("2 isolation", f"{shape}: the GPU's UUID", seen, f"{assigned} (assigned)",
                len(assigned) == 1 and seen == assigned)
    measured = session["extra"].get("verification", {}).get("measured", {})
    results.add("2 isolation", f"{shape}: UUIDs the probe saw (NVML)",
                measured.get("gpu_uuids"), f"{assigned}", measured.get("gpu_uuids") == assigned)


# --- 3. verification: the honest offer passes, lying ones are caught ----------------------

def check_honest_verification(results: Results, session: dict) -> dict:
    v = session["extra"].get("verification", {})
    m, e = v.get("measured", {}), v.get("expected", {})
    shape = session["shape"]
    results.add("3 verification", f"{shape}: verdict", v.get("status"), "passed",
                v.get("ok") is True)
    results.add("3 verification", f"{shape}: benchmark device", m.get("benchmark_device"),
                "gpu" if session["gpus"] else "cpu",
                m.get("benchmark_device") == ("gpu" if session["gpus"] else "cpu"))
    results.add("3 verification", f"{shape}: fp32 GFLOP/s", m.get("gflops"),
                f">= {e.get('gflops_floor')} ({e.get('class')})",
                (m.get("gflops") or 0) >= (e.get("gflops_floor") or 0))
    if session["gpus"]:
        floor = e.get("tensor_gflops_floor")
        results.add("3 verification", f"{shape}: {m.get('tensor_dtype')} GFLOP/s",
                    m.get("tensor_gflops"), f">= {floor}" if floor else "a figure",
                    m.get("tensor_gflops") is not None
                    and (not floor or m["tensor_gflops"] >= floor))
    return v


class LyingNode(ProviderNode):
    """A provider that reports hardware it does not have (the attacker's side)."""

    lie: hardware.Hardware

    def hardware(self) -> hardware.Hardware:
        return self.lie


def lies(real: hardware.Hardware) -> dict[str, tuple[hardware.Hardware, int]]:
    """(reported hardware, GPUs in the shape) per lie: two GPUs, or a bigger card."""
    base = real.gpus[0] if real.gpus else hardware.GPU(0, "GPU-00000000-fake", "NVIDIA H200",
                                                        143771)
    twin = replace(base, index=1, uuid="GPU-ffffffff-fake-second-card")
    bigger = replace(base, model="NVIDIA B200", memory_mb=base.memory_mb * 2)
    return {"claims two GPUs": (replace(real, gpus=(base, twin)), 2),
            "claims a bigger card": (replace(real, gpus=(bigger,)), 1)}


PRICE = 50_000


async def _caught(root: Path, name: str, reported: hardware.Hardware, gpus: int) -> dict:
    """Launch on a lying node; the refusal, the session's record and the money that moved."""
    config = parse_config({
        "provider": {"name": "liar", "runtime": "process"},
        "settlement": {"settle_after_s": 1, "min_challenge_period_s": 60},
        "shapes": [{"name": "gpu-lie", "gpus": gpus, "cpus": 1, "memory_mb": 512,
                    "price_per_second_mist": PRICE}],
        "images": [{"name": "python", "reference": "builtin"}]})
    root.mkdir(parents=True)
    cert, key_file = root / "tls" / "cert.pem", root / "tls" / "key.pem"
    pin = generate_self_signed("liar", cert, key_file)
    with LocalLedger(root / "ledger.sqlite") as ledger:
        node = LyingNode(config, KeyPair.generate(), root / "state",
                         runtime=ProcessRuntime(root / "state" / "sessions"), ledger=ledger)
        node.lie = reported
        node.sessions.metering_interval_s = node.sessions.watch_interval_s = 0.2
        context = server_context(cert, key_file)
        context.walnut_fingerprint = pin  # the node signs and checks requests for this pin
        port = await node.start(host="127.0.0.1", port=0, ssl_context=context)
        url = f"https://127.0.0.1:{port}#sha256={pin}"
        renter = KeyPair.generate()
        ledger.fund(renter.address, FUNDS_MIST)
        manager = RenterManager(root / "renter", [url], key=renter, ledger=ledger)
        try:
            try:
                await manager.launch(url, "gpu-lie", budget_mist=PRICE * BUDGET_SECONDS)
                refusal = None
            except RenterError as exc:
                refusal = exc
            [session] = manager.store.list()
            deadline = time.monotonic() + 60
            while not ledger.get_channel(session.channel_id).closed:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)  # the provider's settlement loop closes it
            channel = ledger.get_channel(session.channel_id)
            return {"refusal": refusal, "session": manager.store.get(session.id),
                    "channel": channel, "spent": FUNDS_MIST - ledger.balance(renter.address)}
        finally:
            await manager.shutdown(stop_sessions=True)
            await node.stop(stop_sessions=True)


def check_lying_offers(results: Results, root: Path) -> None:
    """Each lie is refused with 409 and its reason, and costs only the check's seconds."""
    real = hardware.detect(str(root))
    saved = os.environ.get("JUPYTER_DATA_DIR")
    os.environ["JUPYTER_DATA_DIR"] = str(root / "jupyter-data")
    try:
        for i, (name, (reported, gpus)) in enumerate(lies(real).items()):
            try:
                got = asyncio.run(_caught(root / f"lie{i}", name, reported, gpus))
            except Exception as exc:
                results.fail("3 verification", name, exc)
                continue
            refusal, session, channel = got["refusal"], got["session"], got["channel"]
            message = refusal.message if refusal else "launched: the lie was not caught"
            results.add("3 verification", f"{name}: refusal", message.split(";")[0],
                        "409 verification failed", bool(refusal) and refusal.status == 409
                        and "verification failed" in message)
            check_s = (session.extra.get("verification") or {}).get("check_seconds", 0)
            bound = PRICE * (int(check_s) + 3)
            results.add("3 verification", f"{name}: paid (MIST)",
                        f"{got['spent']} for a {check_s}s check",
                        f"0 < paid <= {bound}, channel closed",
                        channel.closed and 0 < got["spent"] == channel.claimed <= bound)
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_DATA_DIR", None)
        else:
            os.environ["JUPYTER_DATA_DIR"] = saved


# --- 4. training: a small MLP on the Walnut kernel, as a local run -------------------------

TRAINING_CODE = '''
import json, time
def walnut_train(device, steps, seed=0):
    """A small MLP fitted to a fixed synthetic regression; the loss every 25 steps.
    torch on `device`; without torch (a CPU dry run) the same net in numpy."""
    try:
        import torch
    except ImportError:
        torch = None
    t0 = time.perf_counter()
    if torch is not None:
        torch.manual_seed(seed)
        x = torch.randn(4096, 64, device=device)
        y = torch.sin(x @ torch.randn(64, 1, device=device) / 8)  # a smooth target
        net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 1)).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        curve = []
        for step in range(steps):
            loss = torch.nn.functional.mse_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 25 == 0 or step == steps - 1:
                curve.append(float(loss.detach()))
        library = "torch"
    else:
        import numpy as np
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((512, 16))  # small: a shared CPU runs it in a second
        y = np.sin(x @ rng.standard_normal((16, 1)) / 4)  # a smooth target
        w1, w2 = rng.standard_normal((16, 64)) / 4, rng.standard_normal((64, 1)) / 8
        curve = []
        for step in range(steps):
            h = np.maximum(x @ w1, 0)
            err = h @ w2 - y
            g2 = h.T @ err * (2 / len(x))
            g1 = x.T @ ((err @ w2.T) * (h > 0)) * (2 / len(x))
            w1 -= 0.1 * g1
            w2 -= 0.1 * g2
            if step % 25 == 0 or step == steps - 1:
                curve.append(float((err ** 2).mean()))
        library = "numpy"
    return {"curve": curve, "library": library, "device": str(device),
            "seconds": round(time.perf_counter() - t0, 3)}
'''

LOAD_CELL = '''
import time
try:
    import torch
    a = torch.rand(8192, 8192, device="cuda")
    deadline = time.monotonic() + {seconds}
    while time.monotonic() < deadline:  # keep the GPU busy until interrupted
        a = a @ a
        a = a / a.norm()
        torch.cuda.synchronize()
except KeyboardInterrupt:
    pass
'''


def local_training(device: str, steps: int) -> dict:
    namespace: dict = {}
    exec(TRAINING_CODE, namespace)
    return namespace["walnut_train"](device, steps)


def curves_match(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= LOSS_TOLERANCE * max(abs(y), LOSS_FLOOR)
                                    for x, y in zip(a, b, strict=True))


def check_training(results: Results, kernel: KernelSession, gpu: bool,
                   steps: int = TRAINING_STEPS) -> None:
    device = "cuda" if gpu else "cpu"
    remote = last_json(kernel.execute(
        TRAINING_CODE + f"\nprint(json.dumps(walnut_train({device!r}, {steps})))"))
    local = local_training(device, steps)
    results.add("4 training", "library / device (remote)",
                f"{remote['library']} / {remote['device']}",
                "torch / cuda" if gpu else f"{local['library']} / cpu",
                (remote["library"], remote["device"]) == (("torch", "cuda") if gpu
                                                          else (local["library"], "cpu")))
    curve = remote["curve"]
    results.add("4 training", f"loss, first -> last of {steps} steps",
                f"{curve[0]:.4f} -> {curve[-1]:.4f}", "falls by half or more",
                curve[-1] <= curve[0] / 2)
    results.add("4 training", "loss curve vs the same run locally",
                f"max rel. diff {max_rel_diff(curve, local['curve']):.2e}",
                f"<= {LOSS_TOLERANCE} at every point", curves_match(curve, local["curve"]))
    results.add("4 training", "seconds remote / local",
                f"{remote['seconds']} / {local['seconds']}", "-", None)


def max_rel_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max(abs(x - y) / max(abs(y), LOSS_FLOOR) for x, y in zip(a, b, strict=True))


def check_usage(results: Results, stack: Stack, session: dict, kernel: KernelSession) -> None:
    """While a cell loads the GPU, the session's usage (renter API) shows it above zero."""
    task = kernel.start_execute(LOAD_CELL.format(seconds=USAGE_TIMEOUT_S),
                                timeout=USAGE_TIMEOUT_S + 60)
    seen: dict = {}
    deadline = time.monotonic() + USAGE_TIMEOUT_S
    while time.monotonic() < deadline:
        kernel.pump(0.5)  # the cell runs on; the renter server refreshes usage each second
        usage = stack.api("GET", f"walnut/sessions/{session['id']}").get("usage") or {}
        if (usage.get("gpu_utilization_pct") or 0) > 0 and \
                (usage.get("gpu_memory_used_mb") or 0) > 0:
            seen = usage
            break
        seen = usage
    kernel.interrupt()
    kernel.finish(task)
    results.add("4 training", "usage: GPU utilisation (%)", seen.get("gpu_utilization_pct"),
                "> 0 while the cell runs", (seen.get("gpu_utilization_pct") or 0) > 0)
    results.add("4 training", "usage: GPU memory used (MiB)", seen.get("gpu_memory_used_mb"),
                "> 0 while the cell runs", (seen.get("gpu_memory_used_mb") or 0) > 0)


# --- 5. figures ---------------------------------------------------------------------------

def direct_matmul_tflops(seconds: float = 1.0) -> dict:
    """The same benchmark as the probe, run here with torch directly (no kernel, no Walnut)."""
    bench = probe.benchmark(seconds, use_gpu=True)
    return {"fp32": bench.get("gflops", 0) / 1000,
            "tensor": (bench.get("tensor") or {}).get("gflops", 0) / 1000,
            "dtype": (bench.get("tensor") or {}).get("dtype"), "device": bench.get("device")}


def check_figures(results: Results, verification: dict, launch_s: float, rtts_ms: list[float],
                  gpu: bool) -> None:
    m = verification.get("measured", {})
    if gpu:
        direct = direct_matmul_tflops()
        for label, seen, mine in (("fp32", m.get("gflops"), direct["fp32"]),
                                  (direct["dtype"] or "tensor", m.get("tensor_gflops"),
                                   direct["tensor"])):
            seen_t = (seen or 0) / 1000
            results.add("5 figures", f"matmul {label} TFLOP/s: probe / torch directly",
                        f"{seen_t:.1f} / {mine:.1f}", "probe >= 50% of direct",
                        mine > 0 and seen_t >= 0.5 * mine)
    else:
        results.add("5 figures", "matmul TFLOP/s: probe / torch directly",
                    "skipped: no GPU on this machine", "-", None)
    # judged on the GPU node only: a dry run shares its CPUs, so its times are figures
    results.add("5 figures", "launch to first result (s)", round(launch_s, 2),
                f"< {START_TIMEOUT_S:.0f}", launch_s < START_TIMEOUT_S if gpu else None)
    rtts = sorted(rtts_ms)
    median = rtts[len(rtts) // 2]
    results.add("5 figures", f"execute RTT through the renter server, median of {len(rtts)} (ms)",
                round(median, 2), "< 40 (no Nagle stall)", median < 40 if gpu else None)


def execute_rtts(kernel: KernelSession, count: int = 50) -> list[float]:
    rtts = []
    kernel.execute("1")  # warm
    for _ in range(count):
        t0 = time.perf_counter()
        kernel.execute("1")
        rtts.append((time.perf_counter() - t0) * 1000)
    return rtts


# --- all of it ----------------------------------------------------------------------------

def run_all(root: Path, gpu: bool, results: Results | None = None) -> Results:
    """Every check in order; a check that raises is a FAIL line and the rest still run."""
    results = results or Results()
    stack = start_stack(root)
    try:
        try:
            check_detection(results, stack.provider_home, gpu)
        except Exception as exc:
            results.fail("1 detection", "init and detection", exc)
        shapes = [s["name"] for s in stack.provider_status()["shapes"]]
        main_shape = "gpu-1" if gpu else "cpu-small"
        if main_shape not in shapes:
            results.add("2 isolation", f"shape {main_shape}", shapes, main_shape, False)
            return results
        _session_checks(results, stack, main_shape, gpu)
        if gpu:
            _session_checks(results, stack, "cpu-small", gpu, cpu_only=True)
        try:
            check_lying_offers(results, root / "lies")
        except Exception as exc:
            results.fail("3 verification", "lying offers", exc)
    finally:
        stack.stop()
    return results


def _session_checks(results: Results, stack: Stack, shape: str, gpu: bool,
                    cpu_only: bool = False) -> None:
    t0 = time.perf_counter()
    try:
        session = stack.launch(shape)
    except Exception as exc:
        results.fail("2 isolation", f"launch {shape}", exc)
        return
    try:
        with KernelSession(stack, session["kernel_name"]) as kernel:
            kernel.execute("print(1)")
            launch_s = time.perf_counter() - t0
            for step, check in (
                    ("2 isolation", lambda: check_devices(results, stack, session, kernel, gpu)),
                    ("3 verification", lambda: None if cpu_only else
                        check_honest_verification(results, session)),
                    ("4 training", lambda: None if cpu_only else
                        check_training(results, kernel, gpu)),
                    ("4 training", lambda: check_usage(results, stack, session, kernel)
                        if gpu and not cpu_only else None)):
                try:
                    check()
                except Exception as exc:
                    results.fail(step, shape, exc)
            if not cpu_only:
                try:
                    check_figures(results, session["extra"].get("verification", {}), launch_s,
                                  execute_rtts(kernel), gpu)
                except Exception as exc:
                    results.fail("5 figures", shape, exc)
    except Exception as exc:
        results.fail("4 training", f"kernel of {shape}", exc)
    finally:
        try:
            stack.api("DELETE", f"walnut/sessions/{session['id']}")
        except Exception as exc:
            results.fail("2 isolation", f"stop {shape}", exc)

