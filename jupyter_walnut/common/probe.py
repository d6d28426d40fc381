"""What a session's container really gives, measured from inside it.

This module is self-contained on purpose (standard library, plus numpy / pynvml / torch /
cupy when the image has them): the renter sends its source into a fresh kernel of the
session and reads back the one JSON line `main()` prints. `walnut-provider benchmark` runs
the same code on the provider's machine, so attested and measured figures are comparable.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import time

PROBE_VERSION = 1
MARKER = "WALNUT-PROBE "  # prefix of the result line, so stray output cannot be mistaken


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def cpu_quota() -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 cpu.max, v1 cfs_quota_us); None: no cap."""
    v2 = _read("/sys/fs/cgroup/cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), \
        _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def cpus() -> dict:
    try:  # the CPUs this process may be scheduled on (docker --cpuset-cpus, taskset)
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = cpu_quota()
    effective = affinity if quota is None else min(float(affinity), quota)
    return {"affinity": affinity, "quota": quota, "effective": round(effective, 2)}


def memory() -> dict:
    """Physical memory and the cgroup limit (v2 memory.max, v1 limit_in_bytes), in MiB."""
    total = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) // 1024
    limit = None
    raw = _read("/sys/fs/cgroup/memory.max") or \
        _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if raw and raw != "max" and int(raw) < 2**60:  # v1 reports "no limit" as a huge number
        limit = int(raw) // (1024 * 1024)
    effective = min(x for x in (total, limit) if x is not None) if (total or limit) else None
    return {"total_mb": total, "cgroup_limit_mb": limit, "effective_mb": effective}


def _visible(index: int, uuid: str) -> bool:
    """NVML sees every GPU of the host; CUDA_VISIBLE_DEVICES says which this session has."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return True
    wanted = [w.strip() for w in env.split(",") if w.strip()]
    return str(index) in wanted or any(uuid.startswith(w) for w in wanted if w.startswith("GPU-"))


def _gpus_from_smi() -> dict:
    """Without the NVML binding: nvidia-smi, which the NVIDIA container runtime mounts."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"devices": [], "error": "neither nvidia-ml-py nor nvidia-smi is available"}
    try:
        out = subprocess.run([smi, "--query-gpu=index,uuid,name,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"devices": [], "error": f"nvidia-smi failed: {exc}"}
    devices = []
    for line in out.strip().splitlines():
        index, uuid, name, mem = (part.strip() for part in line.split(","))
        if _visible(int(index), uuid):
            devices.append({"index": int(index), "uuid": uuid, "model": name,
                            "memory_mb": int(float(mem))})
    return {"devices": devices, "error": None, "source": "nvidia-smi"}


def gpus() -> dict:
    try:
        import pynvml  # noqa: PLC0415  (optional: not in every session image)
    except ImportError:
        return _gpus_from_smi()
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no device: a CPU-only container
        return {"devices": [], "error": f"NVML unavailable: {exc.__class__.__name__}"}
    try:
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid, name = pynvml.nvmlDeviceGetUUID(h), pynvml.nvmlDeviceGetName(h)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            name = name.decode() if isinstance(name, bytes) else str(name)
            if _visible(i, uuid):
                devices.append({"index": i, "uuid": uuid, "model": name,
                                "memory_mb": int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
                                // (1024 * 1024)})
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {"devices": devices, "error": None,
                "driver": driver.decode() if isinstance(driver, bytes) else str(driver)}
    except Exception as exc:
        return {"devices": [], "error": f"NVML error: {exc}"}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _timed_matmuls(make, matmul, sync, seconds: float, n_max: int) -> dict:
    """Size n so one multiply takes about 1/8 of the budget (compute-bound, yet a dozen
    repeats), then repeat for the budget: about `seconds` whatever the hardware."""
    target, n = seconds / 8, 512
    while True:
        a, b = make(n)
        matmul(a, b)
        sync()  # warm-up: allocation, kernel selection, BLAS threads
        t0 = time.perf_counter()
        matmul(a, b)
        sync()
        one = max(time.perf_counter() - t0, 1e-6)
        if one >= target / 2 or n >= n_max:
            break
        # time grows as n^3: jump straight to the predicted size (at most 4x per step)
        n = min(n_max, max(n + 64, int(n * min(4.0, (target / one) ** (1 / 3))) // 64 * 64))
    reps, t0 = 0, time.perf_counter()
    while reps == 0 or time.perf_counter() - t0 < seconds:
        matmul(a, b)
        reps += 1
        sync()
    elapsed = time.perf_counter() - t0
    return {"n": n, "repeats": reps, "seconds": round(elapsed, 3),
            "gflops": round(2 * n**3 * reps / elapsed / 1e9, 1)}


def _torch_tensor_core(torch, dev, seconds: float) -> dict:
    """The 16-bit matrix multiply that tensor cores run (what training uses): bfloat16 where
    the GPU has it (Ampere and later), else float16."""
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    result = _timed_matmuls(
        lambda n: (torch.rand(n, n, device=dev, dtype=dtype),
                   torch.rand(n, n, device=dev, dtype=dtype)),
        torch.matmul, torch.cuda.synchronize, seconds, 16384)
    return {**result, "dtype": str(dtype).removeprefix("torch.")}


def benchmark(seconds: float = 1.0, use_gpu: bool = True) -> dict:
    """float32 matrix multiply throughput, on the first GPU when a library can reach it;
    with torch on a GPU also the 16-bit tensor-core figure (`tensor`). Without torch: cupy
    float32 only; without a GPU library: numpy on the CPU."""
    if use_gpu:
        try:
            import torch  # noqa: PLC0415  (optional: only in GPU images)

            if torch.cuda.is_available():
                dev = torch.device("cuda:0")
                result = _timed_matmuls(
                    lambda n: (torch.rand(n, n, device=dev), torch.rand(n, n, device=dev)),
                    torch.matmul, torch.cuda.synchronize, seconds, 16384)
                return {**result, "device": "gpu", "library": "torch",
                        "gpu_model": torch.cuda.get_device_name(0),
                        "tensor": _torch_tensor_core(torch, dev, seconds / 2)}
        except ImportError:
            pass
        try:
            import cupy  # noqa: PLC0415  (optional: only in GPU images)

            if cupy.cuda.runtime.getDeviceCount() > 0:
                result = _timed_matmuls(
                    lambda n: (cupy.random.rand(n, n, dtype=cupy.float32),
                               cupy.random.rand(n, n, dtype=cupy.float32)),
                    cupy.matmul, cupy.cuda.Device(0).synchronize, seconds, 16384)
                return {**result, "device": "gpu", "library": "cupy"}
        except Exception:  # ImportError, or a CUDA runtime that cannot start
            pass
    try:
        import numpy as np  # noqa: PLC0415  (optional: not in every session image)
    except ImportError:
        return {"device": "none", "error": "neither numpy nor a GPU library in the image"}
    rng = np.random.default_rng(0)
    result = _timed_matmuls(
        lambda n: (rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)),
        np.matmul, lambda: None, seconds, 8192)
    return {**result, "device": "cpu", "library": "numpy"}


def run_probe(seconds: float = 1.0) -> dict:
    t0 = time.perf_counter()
    report = {"probe_version": PROBE_VERSION, "cpus": cpus(), "memory": memory(),
              "gpus": gpus(), "python": platform.python_version(),
              "machine": platform.machine()}
    report["benchmark"] = benchmark(seconds, use_gpu=bool(report["gpus"]["devices"]))
    report["probe_seconds"] = round(time.perf_counter() - t0, 3)
    if not math.isfinite(report["benchmark"].get("gflops", 0.0)):
        report["benchmark"]["gflops"] = 0.0
    return report


def main(seconds: float = 1.0) -> None:
    print(MARKER + json.dumps(run_probe(seconds)), flush=True)


if __name__ == "__main__":
    main()
