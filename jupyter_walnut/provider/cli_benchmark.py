"""`walnut-provider benchmark`: run the renters' verification probe on this machine, sign
a digest of the report with the provider identity and, with --publish, put it in the
provider's registry entry, where renters compare it with what their sessions measure.

    walnut-provider benchmark [--seconds 1] [--output FILE] [--publish] [--ledger FILE]

The attestation stored in the entry's `specs` JSON under "attestation":
{"digest": sha256 hex of the canonical report, "signature": Ed25519 over
"walnut-attestation-v1:" + digest, "public_key": hex, "report": the probe's report}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..common.cli import run_command
from ..common.keys import KeyPair
from ..common.numbers import cli_duration
from ..common.probe import run_probe
from ..common.probe_check import make_attestation, summarize
from ..ledger import LocalLedger, default_ledger_path
from .config import load_config


def add_benchmark_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "benchmark", help="measure this machine as renters will, sign and publish the report")
    p.add_argument("--seconds", type=cli_duration("--seconds", maximum=600), default=1.0,
                   help="length of the matrix-multiply benchmark (default: 1)")
    p.add_argument("--output", type=Path,
                   help="where to write the signed report (default: <home>/attestation.json)")
    p.add_argument("--publish", action="store_true",
                   help="put the signed digest in this provider's registry entry")
    p.add_argument("--ledger", type=Path, help="local ledger file (default: the config's)")
    p.add_argument("--json", action="store_true", help="print the attestation as JSON")
    p.set_defaults(func=_guarded)


def _guarded(args: argparse.Namespace) -> int:
    return run_command(cmd_benchmark, args, prog="walnut-provider")


def cmd_benchmark(args: argparse.Namespace) -> int:
    if not 0.1 <= args.seconds <= 60:
        raise ValueError("--seconds must be between 0.1 and 60")
    identity = KeyPair.load(args.home / "identity.key")
    report = {**run_probe(args.seconds), "measured_at": int(time.time())}
    attestation = make_attestation(report, identity)
    output = args.output or args.home / "attestation.json"
    output.write_text(json.dumps(attestation, indent=2) + "\n")
    if args.json:
        print(json.dumps(attestation, indent=2))
    else:
        s = summarize(report)
        gpus = ", ".join(s["gpu_models"]) or f"none ({report['gpus'].get('error')})"
        print(f"CPUs      {s['cpus']:g} (affinity {report['cpus']['affinity']}, "
              f"quota {report['cpus']['quota'] or 'none'})")
        print(f"Memory    {s['memory_mb']} MiB")
        print(f"GPUs      {gpus}")
        bench = report["benchmark"]
        print(f"Benchmark {bench.get('gflops')} GFLOP/s float32 matmul on "
              f"{bench.get('device')} ({bench.get('library')}, n={bench.get('n')}, "
              f"{bench.get('seconds')} s)")
        print(f"Digest    {attestation['digest']}  (signed by {identity.address})")
        print(f"Report    {output}")
    if args.publish:
        entry = publish(args, identity, attestation)
        print(f"Published in registry entry {entry.provider_id}")
    return 0


def publish(args: argparse.Namespace, identity: KeyPair, attestation: dict):
    """Merge the attestation into this provider's registry entry (other specs kept)."""
    path = args.ledger
    if path is None:
        config = load_config(args.home / "provider.toml")
        path = Path(config.ledger_path) if config.ledger_path else default_ledger_path()
    with LocalLedger(path) as ledger:
        entry = next((e for e in ledger.list_providers() if e.owner == identity.address), None)
        if entry is None:
            raise ValueError("this provider is not in the registry: run "
                             "`walnut-provider register` first")
        try:
            specs = json.loads(entry.specs or "{}")
        except ValueError:
            specs = {}
        if not isinstance(specs, dict):
            specs = {"hardware": specs}
        specs["attestation"] = attestation
        return ledger.update_provider(identity, entry.provider_id,
                                      specs=json.dumps(specs, separators=(",", ":")))
