"""Compare what a probe measured with what an offer promised (and a provider attested).

Hard checks fail the session: fewer CPUs, less memory, fewer or other GPUs than sold, or a
benchmark below the floor of the hardware class. Softer signs (faster than the class can
be, far below the provider's own attested figures) are warnings the user sees.

Expected float32 matrix-multiply throughput, GFLOP/s. The floor is about 35% of the class's
published FP32 peak (SGEMM reaches 60-90% of peak; the margin absorbs thermal limits, a
busy neighbour and a 1-second measurement); the ceiling is 4x the peak (TF32 tensor cores
may legitimately exceed the FP32 peak; beyond that the timing itself is suspect). With
torch on a GPU the probe also times a 16-bit multiply on the tensor cores, judged against
35% of the class's dense BF16 peak (TENSOR_PEAKS) where it is known.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field

from .keys import sui_address, verify

# (pattern on the NVML model name, FP32 peak TFLOP/s of the slowest variant, of the fastest)
GPU_CLASSES: list[tuple[str, float, float]] = [
    (r"\bH200\b|\bGH200\b", 60.0, 67.0),
    (r"\bH100\b", 51.0, 67.0),
    (r"\bL40S\b", 91.6, 91.6),
    (r"\bL40\b", 90.5, 90.5),
    (r"\bL4\b", 30.3, 30.3),
    (r"\bA100\b|\bA800\b", 19.5, 19.5),
    (r"\bA10G?\b", 31.2, 31.2),
    (r"\bA40\b", 37.4, 37.4),
    (r"\bA30\b", 10.3, 10.3),
    (r"RTX 6000 ADA", 91.1, 91.1),
    (r"\bA6000\b", 38.7, 38.7),
    (r"RTX 4090", 82.6, 82.6),
    (r"RTX 3090", 35.6, 35.6),
    (r"\bV100\b", 14.0, 15.7),
    (r"\bT4\b", 8.1, 8.1),
]
# 16-bit (bfloat16, or float16 before Ampere) dense tensor-core peak TFLOP/s of the slowest
# variant, from the vendor's datasheets (H200 NVL, H100 PCIe, A100, L40S, L4): the probe's
# `tensor` figure must reach FLOOR_FRACTION of it. Classes not listed are judged on FP32.
TENSOR_PEAKS: dict[str, float] = {
    r"\bH200\b|\bGH200\b": 835.0,
    r"\bH100\b": 756.0,
    r"\bL40S\b": 362.0,
    r"\bL4\b": 121.0,
    r"\bA100\b|\bA800\b": 312.0,
}
UNKNOWN_GPU_FLOOR_GFLOPS = 1000.0  # any CUDA GPU of the last decade multiplies this fast
CPU_FLOOR_GFLOPS_PER_CORE = 2.0  # a vectorised BLAS core does 10-50; below 2 it is not there
FLOOR_FRACTION, CEILING_FACTOR = 0.35, 4.0
MEMORY_TOLERANCE = 0.9  # MiB rounding and the runtime's own overhead
GPU_MEMORY_TOLERANCE = 0.97
ATTESTED_FRACTION = 0.5  # measured below half of the attested figure: flagged


def gpu_class(model: str | None) -> tuple[str, float, float] | None:
    text = (model or "").upper()
    for pattern, low, high in GPU_CLASSES:
        if re.search(pattern, text):
            return pattern, low, high
    return None


def expected_gflops(offer: dict) -> tuple[float, float | None, str]:
    """(floor, ceiling or None, hardware class in words) for the offer's benchmark device."""
    if offer.get("gpus"):
        cls = gpu_class(offer.get("gpu_model"))
        if cls is None:
            return UNKNOWN_GPU_FLOOR_GFLOPS, None, f"GPU {offer.get('gpu_model') or 'unknown'}"
        _, low, high = cls
        return low * 1000 * FLOOR_FRACTION, high * 1000 * CEILING_FACTOR, offer["gpu_model"]
    cpus = float(offer.get("cpus") or 1)
    return CPU_FLOOR_GFLOPS_PER_CORE * cpus, None, f"{cpus:g} CPU cores"


def tensor_floor_gflops(offer: dict) -> float | None:
    """The floor of the 16-bit tensor-core figure for the offer's GPU class, if known."""
    cls = gpu_class(offer.get("gpu_model")) if offer.get("gpus") else None
    peak = cls and TENSOR_PEAKS.get(cls[0])
    return peak * 1000 * FLOOR_FRACTION if peak else None


def _same_model(a: str | None, b: str | None) -> bool:
    norm = lambda s: " ".join((s or "").upper().replace("NVIDIA", "").split())  # noqa: E731
    return norm(a) == norm(b)


@dataclass
class Verdict:
    ok: bool
    reasons: list[str] = field(default_factory=list)  # why it failed, in words
    warnings: list[str] = field(default_factory=list)
    measured: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    attestation: str = "none"  # none | matches | differs | invalid

    def to_json(self) -> dict:
        return {"ok": self.ok, "status": "passed" if self.ok else "failed",
                "reasons": self.reasons, "warnings": self.warnings, "measured": self.measured,
                "expected": self.expected, "attestation": self.attestation,
                "checked_at": time.time()}


def summarize(report: dict) -> dict:
    """The figures a user reads (the full report stays with the provider's attestation)."""
    bench = report.get("benchmark", {})
    devices = report.get("gpus", {}).get("devices", [])
    return {"cpus": report.get("cpus", {}).get("effective"),
            "memory_mb": report.get("memory", {}).get("effective_mb"),
            "gpus": len(devices), "gpu_models": [d["model"] for d in devices],
            "gpu_memory_mb": [d["memory_mb"] for d in devices],
            "gpu_uuids": [d["uuid"] for d in devices],
            "gflops": bench.get("gflops"), "benchmark_device": bench.get("device"),
            "tensor_gflops": (bench.get("tensor") or {}).get("gflops"),
            "tensor_dtype": (bench.get("tensor") or {}).get("dtype"),
            "probe_seconds": report.get("probe_seconds")}


def check(report: dict, offer: dict, provider_gpu_uuids: list[str] | None = None,
          attested: dict | None = None) -> Verdict:
    """`offer`: gpus, gpu_model, gpu_memory_mb, cpus, memory_mb as sold. `attested`: the
    provider's signed benchmark report, already checked by `verify_attestation`."""
    m = summarize(report)
    floor, ceiling, klass = expected_gflops(offer)
    v = Verdict(ok=True, measured=m, expected={
        "cpus": offer.get("cpus"), "memory_mb": offer.get("memory_mb"),
        "gpus": offer.get("gpus") or 0, "gpu_model": offer.get("gpu_model"),
        "gflops_floor": round(floor, 1), "gflops_ceiling": ceiling and round(ceiling),
        "tensor_gflops_floor": tensor_floor_gflops(offer), "class": klass})
    fail = v.reasons.append
    cpus = float(offer.get("cpus") or 0)
    if m["cpus"] is not None and m["cpus"] + 0.01 < cpus:
        fail(f"the offer promises {cpus:g} CPUs, the container has {m['cpus']:g}")
    mem = int(offer.get("memory_mb") or 0)
    if m["memory_mb"] is not None and m["memory_mb"] < mem * MEMORY_TOLERANCE:
        fail(f"the offer promises {mem} MiB of memory, the container has {m['memory_mb']} MiB")
    want = int(offer.get("gpus") or 0)
    if m["gpus"] < want:
        why = report.get("gpus", {}).get("error")
        fail(f"the offer promises {want} GPU(s), the container has {m['gpus']}"
             + (f" ({why})" if why and not m["gpus"] else ""))
    if want:
        for model in set(m["gpu_models"]):
            if offer.get("gpu_model") and not _same_model(model, offer["gpu_model"]):
                fail(f"the offer promises {offer['gpu_model']}, the container has {model}")
        gmem = offer.get("gpu_memory_mb")
        for got in m["gpu_memory_mb"]:
            if gmem and got < gmem * GPU_MEMORY_TOLERANCE:
                fail(f"a GPU has {got} MiB, the offer promises {gmem} MiB")
        if len(set(m["gpu_uuids"])) != len(m["gpu_uuids"]):
            fail("the same GPU is reported more than once")
        if provider_gpu_uuids:
            strangers = [u for u in m["gpu_uuids"] if u not in provider_gpu_uuids]
            if strangers:
                fail(f"GPU {strangers[0]} is not one the provider advertises")
    gflops, device = m["gflops"], m["benchmark_device"]
    if want and device != "gpu":
        v.warnings.append("the GPU benchmark was skipped: no torch or cupy in the image "
                          "(model, count and memory were checked through NVML)")
    elif gflops is None:  # an image without numpy: judged on the counts alone
        v.warnings.append(f"the benchmark was skipped: "
                          f"{report.get('benchmark', {}).get('error', 'no result')}")
    else:
        if gflops < floor:
            fail(f"the benchmark measured {gflops:g} GFLOP/s; {klass} gives at least "
                 f"{floor:g}")
        tensor, tensor_floor = m["tensor_gflops"], v.expected["tensor_gflops_floor"]
        if want and tensor is not None and tensor_floor and tensor < tensor_floor:
            fail(f"the {m['tensor_dtype']} benchmark measured {tensor:g} GFLOP/s; {klass} "
                 f"gives at least {tensor_floor:g}")
        if ceiling and gflops > ceiling:
            v.warnings.append(f"the benchmark measured {gflops:g} GFLOP/s, more than "
                              f"{klass} can do: the timing or the model is misreported")
    if attested is not None:
        v.attestation = compare_attested(report, attested, v.warnings)
    v.ok = not v.reasons
    return v


def compare_attested(report: dict, attested: dict, warnings: list[str]) -> str:
    """Measured vs the provider's own signed figures; large differences become warnings."""
    before = len(warnings)
    mine, theirs = summarize(report), summarize(attested)
    for model in set(mine["gpu_models"]) - set(theirs["gpu_models"]):
        warnings.append(f"GPU {model} is not in the provider's attested report")
    if mine["benchmark_device"] == theirs["benchmark_device"] and mine["gflops"] \
            and theirs["gflops"]:
        got, claimed = mine["gflops"], theirs["gflops"]
        if mine["benchmark_device"] == "cpu":  # per core: the container has a share
            got /= max(mine["cpus"] or 1, 1e-3)
            claimed /= max(theirs["cpus"] or 1, 1e-3)
        if got < claimed * ATTESTED_FRACTION:
            unit = "GFLOP/s per core" if mine["benchmark_device"] == "cpu" else "GFLOP/s"
            warnings.append(f"measured {got:.1f} {unit}, the provider attested "
                            f"{claimed:.1f}")
    return "matches" if len(warnings) == before else "differs"


# --- attestation: a signed digest of a benchmark report ---------------------------------

ATTESTATION_DOMAIN = b"walnut-attestation-v1:"


def report_digest(report: dict) -> str:
    """SHA-256 over the canonical JSON of the report (sorted keys, no spaces)."""
    canonical = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def make_attestation(report: dict, key) -> dict:
    digest = report_digest(report)
    return {"digest": digest,
            "signature": key.sign(ATTESTATION_DOMAIN + bytes.fromhex(digest)).hex(),
            "public_key": key.public_key.hex(), "report": report}


def verify_attestation(attestation: dict, owner: str) -> str | None:
    """None if the attestation is the owner's and intact, else what is wrong, in words."""
    try:
        public_key = bytes.fromhex(attestation["public_key"])
        signature = bytes.fromhex(attestation["signature"])
        report = attestation["report"]
    except (KeyError, TypeError, ValueError):
        return "the attestation is malformed"
    if report_digest(report) != attestation.get("digest"):
        return "the attested report does not match its digest"
    try:
        signer = sui_address(public_key)
    except ValueError:
        return "the attestation is malformed"
    if signer != owner:
        return "the attestation is signed by another key than the provider's"
    if not verify(public_key, signature, ATTESTATION_DOMAIN + bytes.fromhex(
            attestation["digest"])):
        return "the attestation signature is invalid"
    return None
