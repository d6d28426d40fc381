"""What this machine has: GPUs through NVML, CPU, memory and disk.

Without NVML (no driver, no GPU) the node is reported as CPU-only with the reason, never a
traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from dataclasses import asdict, dataclass, field

import psutil

from ..common import probe


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    model: str
    memory_mb: int
    utilization_pct: int | None = None
    memory_used_mb: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class Hardware:
    cpu_count: int
    memory_mb: int
    disk_free_gb: int
    gpus: tuple[GPU, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None
    nvml_error: str | None = None  # why GPUs could not be read, in words
    cpu_utilization_pct: float = 0.0
    memory_used_mb: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


_nvml_lock = threading.Lock()


def _cpu_count() -> int:
    try:  # the CPUs this process may use, which a container limits
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    quota = probe.cpu_quota()  # a container's CFS quota: what a session's probe will see
    return max(1, min(affinity, int(quota))) if quota else affinity


def _memory_mb(total_bytes: int) -> int:
    """Physical memory, or the cgroup's limit when this node runs in a smaller container."""
    limit = probe.memory()["cgroup_limit_mb"]
    return min(total_bytes // (1024 * 1024), limit or total_bytes)


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def detect_gpus() -> tuple[tuple[GPU, ...], str | None, str | None, str | None]:
    """(gpus, driver, cuda, error). Safe to call on machines without NVIDIA drivers."""
    try:
        import pynvml  # noqa: PLC0415  (optional: without nvidia-ml-py the node reads nvidia-smi)
    except ImportError:
        return detect_gpus_smi("nvidia-ml-py is not installed")
    with _nvml_lock:
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return (), None, None, f"NVML unavailable: {exc.__class__.__name__}"
        try:
            driver = _decode(pynvml.nvmlSystemGetDriverVersion())
            cuda_raw = pynvml.nvmlSystemGetCudaDriverVersion()
            cuda = f"{cuda_raw // 1000}.{cuda_raw % 1000 // 10}"
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)

                def optional(fn, *args):
                    try:
                        return fn(*args)
                    except Exception:  # not every GPU reports every sensor
                        return None

                util = optional(pynvml.nvmlDeviceGetUtilizationRates, h)
                power = optional(pynvml.nvmlDeviceGetPowerUsage, h)
                gpus.append(GPU(
                    index=i,
                    uuid=_decode(pynvml.nvmlDeviceGetUUID(h)),
                    model=_decode(pynvml.nvmlDeviceGetName(h)),
                    memory_mb=int(mem.total) // (1024 * 1024),
                    utilization_pct=None if util is None else int(util.gpu),
                    memory_used_mb=int(mem.used) // (1024 * 1024),
                    temperature_c=optional(pynvml.nvmlDeviceGetTemperature, h,
                                           pynvml.NVML_TEMPERATURE_GPU),
                    power_w=None if power is None else power / 1000.0,
                ))
            return tuple(gpus), driver, cuda, None
        except Exception as exc:
            return (), None, None, f"NVML error: {exc}"
        finally:
            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass


def detect_gpus_smi(why_not_nvml: str
                    ) -> tuple[tuple[GPU, ...], str | None, str | None, str | None]:
    """The same figures from `nvidia-smi` (the driver ships it) when the NVML binding is
    missing; `why_not_nvml` is the error when nvidia-smi is not there either."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return (), None, None, why_not_nvml
    try:
        query = subprocess.run(
            [smi, "--query-gpu=index,uuid,name,memory.total,driver_version",
             "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20,
            check=True).stdout
        banner = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
        rows = [[part.strip() for part in line.split(",")] for line in query.splitlines()
                if line.strip()]
        gpus = tuple(GPU(index=int(r[0]), uuid=r[1], model=r[2], memory_mb=int(float(r[3])))
                     for r in rows)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return (), None, None, f"{why_not_nvml}; nvidia-smi failed: {exc}"
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", banner)
    return gpus, rows[0][4] if rows else None, cuda and cuda.group(1), None


def detect(state_dir: str = "/") -> Hardware:
    gpus, driver, cuda, error = detect_gpus()
    vm = psutil.virtual_memory()
    disk = shutil.disk_usage(state_dir if os.path.exists(state_dir) else "/")
    return Hardware(
        cpu_count=_cpu_count(),
        memory_mb=_memory_mb(vm.total),
        disk_free_gb=disk.free // (1024**3),
        gpus=gpus,
        driver_version=driver,
        cuda_version=cuda,
        nvml_error=error,
        cpu_utilization_pct=psutil.cpu_percent(interval=None),
        memory_used_mb=(vm.total - vm.available) // (1024 * 1024),
    )
