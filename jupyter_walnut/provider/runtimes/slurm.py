"""Session gateways as Slurm jobs: a lab's cluster sells its idle hours.

Each session is one batch job (`sbatch`) with the shape's CPUs, memory and GPUs (`--gres`),
the node's maximum session duration as its time limit, and the partition, account and QoS
the `[slurm]` table maps its shape to. The job runs the same gateway as the process runtime
(optionally behind a site's container prefix, e.g. `apptainer exec IMAGE`), binds a free
port on its node and writes `host:port` into the session's directory under the shared state
dir, which the provider polls. Slurm owns the end of a job (time limit, preemption, node
failure, `scancel`); the provider only reads why it ended. The gateway token reaches the job
in a 0600 file, never in the job's environment or command line, which the site can list.

Job names carry the provider id and session id (`walnut-<provider>-<session>`), so a
restarted provider adopts its running jobs and cancels the ones it has no record of.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .base import Runtime, RuntimeError_, RuntimeHandle, RuntimeState, SessionSpec

log = logging.getLogger("walnut.provider")

ENDPOINT_FILE = "endpoint.json"
ENV_FILE = "env.json"
LOG_FILE = "gateway.log"
ENDPOINT_TIMEOUT_S = 90.0  # from RUNNING to host:port published
LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
        "RESIZING", "SIGNALING", "STAGE_OUT")
# why Slurm ended a job, in words a renter understands
END_REASONS = {
    "TIMEOUT": "the cluster's time limit for the job was reached",
    "CANCELLED": "the cluster cancelled the job (scancel)",
    "NODE_FAIL": "the cluster node running the session failed",
    "PREEMPTED": "the cluster preempted the job for other work",
    "OUT_OF_MEMORY": "the session ran out of memory",
    "BOOT_FAIL": "the cluster node failed to boot",
    "DEADLINE": "the job reached its deadline",
    "FAILED": "the gateway exited with an error",
    "COMPLETED": "the gateway exited",
}
SQUEUE_FORMAT = "%i|%j|%T|%r|%P|%N"

# what runs on the allocated node: choose a port, publish host:port, become the gateway
JOB_SCRIPT = """\
import json, os, socket, sys
here = sys.argv[1]
with open(os.path.join(here, {env!r})) as fh:
    env = json.load(fh)
os.unlink(os.path.join(here, {env!r}))  # the token lives on only in the gateway's memory
bind = env.pop("WALNUT_SLURM_BIND")
with socket.socket() as sock:
    sock.bind((bind, 0))
    port = sock.getsockname()[1]
host = bind if bind not in ("0.0.0.0", "") else os.environ.get("SLURMD_NODENAME",
                                                               socket.gethostname())
env.update(WALNUT_GATEWAY_IP=bind, WALNUT_GATEWAY_PORT=str(port))
for key in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURMD_NODENAME"):
    if key in os.environ:
        env[key] = os.environ[key]
tmp = os.path.join(here, {endpoint!r} + ".tmp")
with open(tmp, "w") as fh:
    json.dump({{"host": host, "port": port, "job": os.environ.get("SLURM_JOB_ID")}}, fh)
os.replace(tmp, os.path.join(here, {endpoint!r}))
argv = json.loads(sys.argv[2])
os.chdir(env["HOME"])
os.execvpe(argv[0], argv, env)
"""


@dataclass(frozen=True)
class SlurmPlacement:
    """Where a shape's jobs go; empty means the cluster's default."""

    partition: str = ""
    account: str = ""
    qos: str = ""


@dataclass(frozen=True)
class SlurmSettings:
    """The `[slurm]` table of provider.toml."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    container: str = ""  # command prefix on the node, e.g. "apptainer exec /images/py.sif"
    state_dir: str = ""  # shared by the provider and the nodes; default: the provider's
    bind: str = "0.0.0.0"  # the gateway's listen address on the node
    python: str = ""  # the Python on the nodes that has walnut_gateway; default: this one
    shapes: dict[str, SlurmPlacement] = field(default_factory=dict)

    def placement(self, shape: str) -> SlurmPlacement:
        own = self.shapes.get(shape, SlurmPlacement())
        return SlurmPlacement(own.partition or self.partition, own.account or self.account,
                              own.qos or self.qos)


@dataclass(frozen=True)
class Job:
    job_id: str
    name: str
    state: str
    reason: str
    partition: str
    nodes: str


def job_name(provider_id: str, session_id: str) -> str:
    return f"walnut-{provider_id}-{session_id}"


async def run_slurm(*argv: str, timeout: float = 30.0) -> str:
    """Run a Slurm command; its stdout, or RuntimeError_ with its stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise RuntimeError_(f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise RuntimeError_(f"{argv[0]} did not answer in {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise RuntimeError_(f"{argv[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def parse_squeue(text: str) -> list[Job]:
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 6:
            jobs.append(Job(*parts))
    return jobs


def _placement_args(placement: SlurmPlacement) -> list[str]:
    args = []
    for flag, value in (("--partition", placement.partition), ("--account", placement.account),
                        ("--qos", placement.qos)):
        if value:
            args.append(f"{flag}={value}")
    return args


def _time_limit(seconds: int) -> str:
    minutes, secs = divmod(max(60, seconds), 60)
    return f"{minutes}:{secs:02d}"


class SlurmRuntime(Runtime):
    name = "slurm"

    def __init__(self, state_dir: Path, provider_id: str, settings: SlurmSettings,
                 max_session_seconds: int, python: str = sys.executable) -> None:
        self.state_dir = Path(settings.state_dir) if settings.state_dir else Path(state_dir)
        self.provider_id = provider_id
        self.settings = settings
        self.max_session_seconds = max_session_seconds
        self.python = settings.python or python
        self.poll_interval_s = 0.5
        # set by the node: (session id, "queued (position N)" or "") -> whether to keep waiting
        self.on_queued: Callable[[str, str], bool] = lambda session_id, text: True
        # set by the node: the gateway URL its store recorded for a session, for adoption
        self.recorded_url: Callable[[str], str | None] = lambda session_id: None
        self._jobs: dict[str, Job] = {}
        self._jobs_at = 0.0
        self._snapshot_lock = asyncio.Lock()
        self._capacity: dict = {}
        self._capacity_at = -1e9

    def capacity(self) -> dict:
        """The partition's nodes, idle CPUs and GPUs (sinfo, re-read at most every 10 s)."""
        if time.monotonic() - self._capacity_at > 10:
            try:
                self._capacity = cluster_capacity(cluster_nodes(self.settings.partition))
            except RuntimeError_ as exc:
                self._capacity = {"error": str(exc)}
            self._capacity_at = time.monotonic()
        return self._capacity

    def _dir(self, session_id: str) -> Path:
        return self.state_dir / session_id

    # --- reading the queue ---------------------------------------------------------------

    async def jobs(self, fresh: bool = False) -> dict[str, Job]:
        """This provider's jobs by job id, ended ones too while Slurm remembers them; one
        squeue call serves every caller within a poll interval."""
        async with self._snapshot_lock:
            if fresh or time.monotonic() - self._jobs_at >= self.poll_interval_s:
                out = await run_slurm("squeue", "-h", "--me", "--states=all",
                                      "-o", SQUEUE_FORMAT)
                prefix = job_name(self.provider_id, "")
                self._jobs = {j.job_id: j for j in parse_squeue(out)
                              if j.name.startswith(prefix)}
                self._jobs_at = time.monotonic()
            return self._jobs

    async def _job(self, job_id: str) -> Job | None:
        job = (await self.jobs()).get(job_id)
        if job is not None:
            return job
        try:  # squeue forgets ended jobs after MinJobAge; scontrol may still know it
            out = await run_slurm("scontrol", "show", "job", "-o", job_id)
        except RuntimeError_:
            return None
        fields = dict(p.split("=", 1) for p in out.split() if "=" in p)
        return Job(job_id, fields.get("JobName", ""), fields.get("JobState", "UNKNOWN"),
                   fields.get("Reason", ""), fields.get("Partition", ""),
                   fields.get("NodeList", ""))

    async def queue_position(self, job: Job) -> int:
        """1 + the pending jobs of its partition that Slurm would start before it."""
        out = await run_slurm("squeue", "-h", "-t", "PENDING", "-p", job.partition,
                              "--sort=-p,i", "-o", "%i")
        order = out.split()
        return order.index(job.job_id) + 1 if job.job_id in order else 1

    # --- the Runtime interface -----------------------------------------------------------

    def _submit_argv(self, spec: SessionSpec, session_dir: Path) -> list[str]:
        placement = self.settings.placement(spec.env.get("WALNUT_SHAPE", ""))
        # {session_dir} in the prefix names the one directory a container should bind
        prefix = [part.replace("{session_dir}", str(session_dir))
                  for part in shlex.split(self.settings.container)]
        gateway = [*prefix, self.python, "-m", "walnut_gateway"]
        argv = [
            # a requeued job would be a fresh gateway with the kernel's state lost: it ends
            "sbatch", "--parsable", "--export=NONE", "--no-requeue",
            f"--job-name={job_name(self.provider_id, spec.session_id)}",
            f"--comment=walnut provider={self.provider_id} session={spec.session_id}",
            f"--cpus-per-task={max(1, round(spec.cpus))}", f"--mem={spec.memory_mb}M",
            f"--time={_time_limit(self.max_session_seconds)}",
            f"--output={session_dir / LOG_FILE}", f"--chdir={session_dir}",
            *_placement_args(placement),
        ]
        if spec.gpus:
            argv.append(f"--gres=gpu:{len(spec.gpus)}")
        script = session_dir / "job.py"
        # the launcher needs only the standard library: any Python 3 of the node runs it,
        # also where `python` names the one inside a container
        script.write_text("#!/usr/bin/env python3\n" + JOB_SCRIPT.format(
            env=ENV_FILE, endpoint=ENDPOINT_FILE))
        script.chmod(0o700)
        return [*argv, str(script), str(session_dir), json.dumps(gateway)]

    def _write_env(self, spec: SessionSpec, session_dir: Path) -> None:
        workspace = session_dir / "workspace"
        workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = spec.gateway_env(self.settings.bind, 0, home=str(workspace),
                               runtime_dir=str(workspace / ".runtime"),
                               WALNUT_SLURM_BIND=self.settings.bind,
                               PATH=os.environ.get("PATH", "/usr/bin:/bin"),
                               CUDA_VISIBLE_DEVICES="")  # Slurm sets it from the GRES
        path = session_dir / ENV_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(env, fh)

    async def start(self, spec: SessionSpec) -> RuntimeHandle:
        session_dir = self._dir(spec.session_id)
        session_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_env(spec, session_dir)
        out = await run_slurm(*self._submit_argv(spec, session_dir))
        job_id = out.strip().split(";")[0]
        log.info("session %s: Slurm job %s submitted", spec.session_id, job_id)
        try:
            return await self._wait_running(spec.session_id, job_id)
        except BaseException:  # cancelled, refused or ended: leave no job behind
            await asyncio.shield(self._cancel(job_id))
            raise

    async def _wait_running(self, session_id: str, job_id: str) -> RuntimeHandle:
        """Wait while the job is queued (telling the renter its position) until its gateway
        published host:port."""
        running_since: float | None = None
        while True:
            job = await self._job(job_id)
            if job is None or job.state not in LIVE:
                state = job.state if job else "gone"
                raise RuntimeError_("the Slurm job ended before the session started: "
                                    + END_REASONS.get(state, state.lower()))
            if job.state == "PENDING":
                text = f"queued (position {await self.queue_position(job)})"
                if not self.on_queued(session_id, text):
                    raise RuntimeError_("the session was stopped while queued")
            elif job.state == "RUNNING":
                if not self.on_queued(session_id, ""):
                    raise RuntimeError_("the session was stopped before it started")
                endpoint = self._endpoint(session_id, job)
                if endpoint is not None:
                    return RuntimeHandle(session_id, endpoint, job_id)
                running_since = running_since or time.monotonic()
                if time.monotonic() - running_since > ENDPOINT_TIMEOUT_S:
                    raise RuntimeError_("the Slurm job runs but its gateway published no "
                                        f"address on its node in {ENDPOINT_TIMEOUT_S:.0f}s")
            await asyncio.sleep(self.poll_interval_s)  # polling Slurm; ends with the job

    def _endpoint(self, session_id: str, job: Job) -> str | None:
        """The gateway's address from the job's file, read before any session code ran, and
        only if it names the job's own node."""
        try:
            data = json.loads((self._dir(session_id) / ENDPOINT_FILE).read_text())
            host, port = str(data["host"]), int(data["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if str(data.get("job")) != job.job_id or not 0 < port < 65536:
            return None  # an earlier job's file, or not an address
        allowed = {job.nodes} if self.settings.bind in ("0.0.0.0", "") else {self.settings.bind}
        if host not in allowed:
            log.warning("session %s: endpoint %s is not its node %s; ignored", session_id,
                        host, job.nodes)
            return None
        return f"http://{host}:{port}"

    async def _cancel(self, job_id: str) -> None:
        try:
            await run_slurm("scancel", job_id)
        except RuntimeError_ as exc:  # already gone
            log.debug("scancel %s: %s", job_id, exc)

    async def stop(self, handle: RuntimeHandle) -> None:
        await self._cancel(handle.ref)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = await self._job(handle.ref)
            if job is None or job.state not in LIVE:
                break
            await asyncio.sleep(self.poll_interval_s)  # Slurm ends the job's processes
        # the session directory holds its workspace: wiped so the next renter sees nothing
        shutil.rmtree(self._dir(handle.session_id), ignore_errors=True)

    async def state(self, handle: RuntimeHandle) -> RuntimeState:
        job = await self._job(handle.ref)
        if job is None:
            return RuntimeState(False, "the Slurm job is gone")
        if job.state in ("RUNNING", "COMPLETING", "CONFIGURING"):
            return RuntimeState(True)
        if job.state in LIVE:  # requeued or suspended by the site
            return RuntimeState(False, f"the cluster took the session's node ({job.state})")
        return RuntimeState(False, END_REASONS.get(job.state, job.state.lower()))

    async def adopt(self) -> list[RuntimeHandle]:
        handles = []
        prefix = job_name(self.provider_id, "")
        for job in (await self.jobs(fresh=True)).values():
            if job.state not in LIVE:
                continue
            session_id = job.name[len(prefix):]
            # the address recorded when it started, never the job's file, which the
            # session's code could have rewritten to point the proxy elsewhere
            url = self.recorded_url(session_id) or ""
            handles.append(RuntimeHandle(session_id, url, job.job_id))
        return handles

    async def logs(self, handle: RuntimeHandle, tail: int = 50) -> str:
        try:
            lines = (self._dir(handle.session_id) / LOG_FILE).read_text(
                errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])


# --- the cluster's capacity, for offers and `walnut-provider init` ---------------------


def cluster_nodes(partition: str = "", timeout: float = 10.0) -> list[dict]:
    """The nodes Walnut may use: state, CPUs, memory (MB), GPUs and features, from sinfo."""
    argv = ["sinfo", "-h", "-N", "-o", "%N|%t|%c|%m|%G|%f|%C|%P"]
    if partition:
        argv += ["-p", partition]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError_(f"cannot read the cluster (sinfo): {exc}") from exc
    nodes = []
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 8:
            continue
        name, state, cpus, memory, gres, features, cpu_use, part = parts
        alloc, idle = (int(x) for x in cpu_use.split("/")[:2])
        nodes.append({
            "node": name, "state": state, "partition": part.rstrip("*"),
            "default_partition": part.endswith("*"),
            "cpus": int(cpus), "cpus_idle": idle, "cpus_allocated": alloc,
            "memory_mb": int(memory), "gpus": gres_gpus(gres),
            "features": [] if features == "(null)" else features.split(","),
        })
    return nodes


def gres_gpus(gres: str) -> int:
    """GPUs in a GRES string such as `gpu:a100:4(S:0-1),gpu:2`."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def cluster_capacity(nodes: list[dict]) -> dict:
    """What an offer says about the cluster: nodes up, idle CPUs and GPUs in total."""
    up = [n for n in nodes if n["state"].rstrip("*~#!%$@") in ("idle", "mix", "alloc")]
    return {
        "nodes": len(up),
        "idle_nodes": sum(1 for n in up if n["state"].startswith("idle")),
        "cpus": sum(n["cpus"] for n in up),
        "cpus_idle": sum(n["cpus_idle"] for n in up),
        "gpus": sum(n["gpus"] for n in up),
        "features": sorted({f for n in up for f in n["features"]}),
    }

