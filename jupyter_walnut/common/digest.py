"""Result digests: what a provider signs about a job's results, and how a renter checks it.

manifest      one line per result file, sorted by path: "<sha256> <size> <path>\\n"
digest        SHA-256 of the whole manifest (every result file)
outputs_digest SHA-256 of the manifest lines under outputs/ only: what a deterministic job
              produces identically on any provider (redundant execution compares it)
signature     Ed25519 by the provider's node key over
              b"walnut-job-result-v1\\n" job_id "\\n" session_id "\\n" status "\\n"
              digest "\\n" outputs_digest
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .keys import KeyPair, verify

DOMAIN = b"walnut-job-result-v1"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(root: Path) -> list[tuple[str, int, str]]:
    """(sha256, size, posix path) of every regular file under `root`, sorted by path."""
    rows = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        rows.append((file_sha256(path), path.stat().st_size, rel))
    return sorted(rows, key=lambda r: r[2])


def _digest(rows: list[tuple[str, int, str]]) -> str:
    return hashlib.sha256("".join(f"{h} {n} {p}\n" for h, n, p in rows).encode()).hexdigest()


@dataclass(frozen=True)
class ResultDigest:
    digest: str
    outputs_digest: str

    @classmethod
    def of(cls, root: Path) -> ResultDigest:
        rows = manifest(root)
        return cls(_digest(rows), _digest([r for r in rows if r[2].startswith("outputs/")]))


def message(job_id: str, session_id: str, status: str, d: ResultDigest) -> bytes:
    return b"\n".join([DOMAIN, job_id.encode(), session_id.encode(), status.encode(),
                       d.digest.encode(), d.outputs_digest.encode()])


def sign(key: KeyPair, job_id: str, session_id: str, status: str, d: ResultDigest) -> str:
    return key.sign(message(job_id, session_id, status, d)).hex()


def check(public_key_hex: str, signature_hex: str, job_id: str, session_id: str, status: str,
          claimed: ResultDigest, root: Path) -> str | None:
    """None when `root` holds exactly what the provider signed, else what is wrong."""
    try:
        ok = verify(bytes.fromhex(public_key_hex), bytes.fromhex(signature_hex),
                    message(job_id, session_id, status, claimed))
    except ValueError:
        ok = False
    if not ok:
        return "the provider's signature does not match its result digest"
    actual = ResultDigest.of(root)
    if actual != claimed:
        return "the downloaded results do not match the digest the provider signed"
    return None
