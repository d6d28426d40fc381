"""Batch jobs from the renter's side: submit, follow, retry, download, verify.

A job runs in slots (one, or two with redundant execution); each slot runs attempts, one
at a time, each in its own session on a provider. `start()` returns once every slot's first
attempt was accepted: the provider then runs it without the renter. `step()` follows the
jobs once (any process can call it: state is in SQLite); `watch()` steps until the end.
An attempt that fails retryably (its provider unreachable past a grace period, its session
lost, its kernel died) is retried on another provider while the slot's budget lasts.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from traitlets import Float
from traitlets.config import LoggingConfigurable

from ...common import archive
from ...common.digest import ResultDigest, check
from ...common.errors import BadRequest, WalnutError
from ...ledger.vouchers import Voucher, voucher_fields
from ..manager import RenterError, RenterManager
from ..provider_client import ProviderAPIError
from . import bundle
from . import client as jobs_api
from .offers import OfferError, choose_offer
from .store import JobStore

TERMINAL = ("succeeded", "failed", "cancelled")
LADDER_STEPS = 256
MAX_RESULT_BYTES = 256 * 1024 * 1024  # the provider's own cap on one archive


class JobError(BadRequest, ValueError):
    """A job request that cannot be done (400, 404 for an unknown job); the message is one
    line for the user."""


def _now() -> float:
    return time.time()


class JobManager(LoggingConfigurable):
    """A renter's batch jobs; its parent is the RenterManager, so `c.JobManager.<name>`
    configures it in a server."""

    unreachable_grace_s = Float(
        20.0, config=True,
        help="Seconds a job's provider may stay unreachable before the job counts as lost.")
    poll_interval_s = Float(1.0, config=True, help="Seconds between job status polls.")

    def __init__(self, renter: RenterManager, **kwargs) -> None:
        super().__init__(parent=renter, **kwargs)
        self.renter = renter
        self.store = JobStore(renter.home / "jobs.sqlite")
        self.dir = renter.home / "jobs"
        self.max_result_files = archive.MAX_MEMBERS  # what one results archive may unpack to
        self.max_unpacked_bytes = archive.MAX_UNPACKED_BYTES

    # --- creating jobs ---------------------------------------------------------------------

    def create(self, path: str | Path, *, files: list[str | Path] = (), budget_mist: int,
               parameters: dict[str, Any] | None = None, offer: str | None = None,
               max_retries: int = 2, redundancy: int = 1, name: str | None = None,
               image: str = "python", cell_timeout_s: int | None = None,
               sweep_id: str | None = None, requirements: str | None = None) -> dict:
        """Record a job and keep a copy of its inputs (retries resend them)."""
        if isinstance(budget_mist, bool) or not isinstance(budget_mist, int) or budget_mist <= 0:
            raise JobError("budget must be a positive integer amount of MIST")
        if redundancy not in (1, 2):
            raise JobError("redundancy is 1 (off) or 2 (two providers, digests compared)")
        if max_retries < 0:
            raise JobError("max retries must be 0 or more")
        entry = Path(path)
        kind = bundle.kind_of(entry)
        files_map = bundle.collect(entry, [Path(f) for f in files])
        if kind == "notebook" and parameters:
            files_map[entry.name] = bundle.parameterize(files_map[entry.name], parameters)
        elif parameters:
            raise JobError("parameters go into notebooks; a script reads its own inputs")
        job_id = "job-" + secrets.token_hex(6)
        inputs = self.dir / job_id / "input"
        for rel, data in files_map.items():
            (inputs / rel).parent.mkdir(parents=True, exist_ok=True)
            (inputs / rel).write_bytes(data)
        job = {
            "id": job_id, "name": name or entry.name, "kind": kind, "entry": entry.name,
            "files": sorted(files_map), "parameters": parameters or {},
            "budget_mist": budget_mist, "offer": offer, "image": image,
            "max_retries": max_retries, "redundancy": redundancy,
            "cell_timeout_s": cell_timeout_s, "sweep_id": sweep_id, "status": "queued",
            "requirements": requirements,  # installed by the provider before each attempt
            "created_at": _now(), "ended_at": None, "attempts": [], "cost_mist": 0,
            "error": "", "result_dir": None, "verified": None, "verification": "",
            "metrics": {}, "digest": None, "outputs_digest": None,
        }
        self.store.put(job)
        return job

    def get(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id!r}", status=404)
        return job

    def _save(self, job: dict) -> dict:
        job["cost_mist"] = sum(a["cost_mist"] for a in job["attempts"])
        self.store.put(job)
        return job

    # --- attempts --------------------------------------------------------------------------

    async def start(self, job_id: str, avoid: set[str] | None = None) -> dict:
        """Launch the first attempt of every slot; returns once the providers accepted."""
        job = self.get(job_id)
        if job["status"] != "queued":
            raise JobError(f"job {job_id} is already {job['status']}")
        job["status"] = "running"
        self._save(job)
        for slot in range(job["redundancy"]):
            await self._attempt(job, slot, avoid or set())
        return self._save(job)

    def _slot_attempts(self, job: dict, slot: int) -> list[dict]:
        return [a for a in job["attempts"] if a["slot"] == slot]

    async def _attempt(self, job: dict, slot: int, avoid: set[str]) -> None:
        """Start the next attempt of `slot`, or end the job when that is not possible."""
        previous = self._slot_attempts(job, slot)
        budget = job["budget_mist"] // job["redundancy"] - sum(a["cost_mist"] for a in previous)
        failed = {a["provider_url"] for a in previous}
        others = {a["provider_url"] for a in job["attempts"]
                  if a["slot"] != slot and a["status"] not in TERMINAL}
        if job["redundancy"] > 1:
            failed |= {a["provider_url"] for a in job["attempts"] if a["slot"] != slot}
        attempt = {"n": len(previous) + 1, "slot": slot, "provider_url": "", "node": "",
                   "session_id": None, "remote_id": None, "provider_public_key": "",
                   "status": "starting", "error": "", "retryable": False, "cost_mist": 0,
                   "cell": 0, "cells": 0, "elapsed_s": 0.0, "started_at": _now(),
                   "ended_at": None, "unreachable_since": None, "verified": None,
                   "digest": None, "outputs_digest": None, "result_dir": None}
        try:
            offers = await self.renter.offers()
            try:
                offer = choose_offer(offers, job["offer"], exclude_providers=failed | avoid |
                                     others)
            except OfferError:  # spreading is a preference; a failed provider is not
                offer = choose_offer(offers, job["offer"], exclude_providers=failed)
            attempt.update(provider_url=offer["provider_url"], node=offer["node"])
            job["attempts"].append(attempt)
            status = await self.renter.client(offer["provider_url"]).status()
            attempt["provider_public_key"] = status["provider_public_key"]
            session = await self.renter.launch(offer["provider_url"], offer["shape"],
                                               image=job["image"], budget_mist=budget,
                                               requirements=job.get("requirements"))
            attempt["session_id"] = session.id
            remote = await jobs_api.submit(self.renter.client(session.provider_url), session.id,
                                           self._submission(job, attempt, session))
            attempt.update(remote_id=remote["id"], status="running")
        except (WalnutError, OSError) as exc:  # a refused launch: ledger, disk, provider...
            message = getattr(exc, "message", None) or str(exc)
            if attempt not in job["attempts"]:
                job["attempts"].append(attempt)
            attempt.update(status="failed", error=f"could not start: {message}",
                           ended_at=_now())
            if attempt["session_id"]:
                await self._stop_session(attempt)
            self._save(job)
            # another provider may do what this one could not; money or offers would not
            if isinstance(exc, ProviderAPIError | OSError) and \
                    attempt["n"] <= job["max_retries"]:
                await self._attempt(job, slot, avoid)
                return
            await self._end(job, "failed", f"attempt {attempt['n']} {attempt['error']}")
            return
        self._save(job)

    def _submission(self, job: dict, attempt: dict, session) -> dict:
        inputs = self.dir / job["id"] / "input"
        files = {rel: base64.b64encode((inputs / rel).read_bytes()).decode()
                 for rel in job["files"]}
        return {"kind": job["kind"], "entry": job["entry"], "files": files,
                "attempt": attempt["n"], "cell_timeout_s": job["cell_timeout_s"],
                "stop_session": True, "name": job["name"],
                "vouchers": self._ladder(session)}

    def _ladder(self, session) -> list[dict[str, str]]:
        """Cumulative vouchers up to the deposit, for the provider to release as the job
        runs while nobody is online to sign (see provider/jobs.py)."""
        if session.channel_id is None:
            return []
        deposit = session.deposit_mist
        step = max(1, -(-deposit // LADDER_STEPS))
        amounts = sorted({min(deposit, step * i) for i in range(1, LADDER_STEPS + 1)})
        return [voucher_fields(a, Voucher.sign(self.renter.key, session.channel_id, a).signature)
                for a in amounts]

    # --- following -------------------------------------------------------------------------

    async def step(self, job_id: str) -> dict:
        """Follow a job once: progress, then results, verification and retries at the end."""
        job = self.get(job_id)
        if job["status"] in TERMINAL or job["status"] == "queued":
            return job
        for slot in range(job["redundancy"]):
            attempts = self._slot_attempts(job, slot)
            if not attempts:
                continue
            a = attempts[-1]
            if a["status"] not in TERMINAL:
                await self._poll(a)
                self._save(job)
                if a["status"] in TERMINAL:
                    await self._finish_attempt(job, a)
                    if a["status"] == "failed" and a["retryable"] and \
                            a["n"] <= job["max_retries"]:
                        await self._attempt(job, slot, set())
                    self._save(job)
        if job["status"] not in TERMINAL:
            await self._conclude(job)
        return self._save(job)

    async def _poll(self, a: dict) -> None:
        client = self.renter.client(a["provider_url"])
        try:
            remote = await jobs_api.get(client, a["session_id"], a["remote_id"])
        except ProviderAPIError as exc:
            if exc.status == 0:
                since = a["unreachable_since"] or _now()
                a["unreachable_since"] = since
                if _now() - since >= self.unreachable_grace_s:
                    a.update(status="failed", retryable=True, ended_at=_now(),
                             error=f"provider unreachable for {self.unreachable_grace_s:.0f}s")
                return
            a.update(status="failed", retryable=exc.status == 404, ended_at=_now(),
                     error=f"provider: {exc.message}")
            return
        a["unreachable_since"] = None
        a.update(cell=remote["cell"], cells=remote["cells"], elapsed_s=remote["elapsed_s"],
                 cost_mist=remote.get("cost_mist", a["cost_mist"]), error=remote["error"],
                 retryable=remote["retryable"], metrics=remote.get("metrics") or {})
        self._note_paid(a, remote.get("paid_mist", 0))
        if remote["status"] in TERMINAL:
            a.update(status=remote["status"], ended_at=_now(),
                     digest=remote["digest"], outputs_digest=remote["outputs_digest"],
                     signature=remote["signature"], result_bytes=remote["result_bytes"])

    def _note_paid(self, a: dict, paid: int) -> None:
        """Tell the local session record what the provider already holds from the ladder,
        so the renter's own voucher loop does not send a smaller one."""
        if paid:  # never below what the record holds
            self.renter.store.update_money(a["session_id"], monotonic="voucher_mist",
                                           voucher_mist=paid)

    async def _finish_attempt(self, job: dict, a: dict) -> None:
        """Download and verify what the attempt left (partial results too), stop its
        session so its channel settles."""
        if a.get("signature") and a.get("result_bytes"):
            suffix = "" if job["redundancy"] == 1 else f"-slot{a['slot']}"
            target = self.dir / job["id"] / f"attempt-{a['n']}{suffix}"
            download = target.with_name(target.name + ".tar.gz.part")
            try:
                await self._download(a, download)
                archive.extract(download, target, max_members=self.max_result_files,
                                max_bytes=self.max_unpacked_bytes)
                problem = check(a["provider_public_key"], a["signature"], a["remote_id"],
                                a["session_id"], a["status"],
                                ResultDigest(a["digest"], a["outputs_digest"]), target)
                a.update(result_dir=str(target), verified=problem is None,
                         verification=problem or "signature and digest match")
            except (ProviderAPIError, OSError, archive.ArchiveError) as exc:
                a.update(verified=False, verification=f"results not downloaded: {exc}")
            finally:
                download.unlink(missing_ok=True)
        await self._stop_session(a)
        s = self.renter.store.get(a["session_id"]) if a["session_id"] else None
        if s is not None:
            a["cost_mist"] = max(a["cost_mist"], s.cost_mist)

    async def _download(self, a: dict, path: Path) -> None:
        """The attempt's archive, at most the size the provider announced for it."""
        announced = a.get("result_bytes")
        limit = min(announced, MAX_RESULT_BYTES) if isinstance(announced, int) and \
            announced > 0 else MAX_RESULT_BYTES
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as sink:
            await jobs_api.results(self.renter.client(a["provider_url"]), a["session_id"],
                                   a["remote_id"], sink, limit)

    async def _stop_session(self, a: dict) -> None:
        try:
            await self.renter.stop(a["session_id"], reason=f"job attempt {a['n']} ended")
        except RenterError:
            pass

    async def _conclude(self, job: dict) -> None:
        latest = [self._slot_attempts(job, s)[-1] for s in range(job["redundancy"])
                  if self._slot_attempts(job, s)]
        if len(latest) < job["redundancy"] or any(a["status"] not in TERMINAL for a in latest):
            return
        ok = [a for a in latest if a["status"] == "succeeded"]
        main = ok[0] if ok else latest[0]
        job.update(result_dir=main["result_dir"], digest=main["digest"],
                   outputs_digest=main["outputs_digest"], metrics=main.get("metrics") or {})
        verified = [a.get("verified") for a in latest]
        job["verified"] = all(v is True for v in verified)
        notes = [a.get("verification", "") for a in latest if a.get("verified") is False]
        if job["redundancy"] > 1 and len(ok) == len(latest):
            digests = {a["outputs_digest"] for a in ok}
            if len(digests) > 1:
                job["verified"] = False
                notes.append("redundant runs disagree: outputs digests "
                             + " vs ".join(f"{a['node']}:{a['outputs_digest'][:12]}"
                                           for a in ok))
            else:
                notes.append(f"{len(ok)} providers produced identical outputs")
        job["verification"] = "; ".join(n for n in notes if n) or \
            ("signature and digest match" if job["verified"] else "")
        if len(ok) == len(latest):
            await self._end(job, "succeeded")
        else:
            bad = next(a for a in latest if a["status"] != "succeeded")
            await self._end(job, bad["status"], f"attempt {bad['n']} on {bad['node']}: "
                                                f"{bad['error']}")

    async def _end(self, job: dict, status: str, error: str = "") -> None:
        for a in job["attempts"]:
            if a["status"] not in TERMINAL:
                await self._cancel_attempt(a)
        job.update(status=status, error=error, ended_at=_now())
        self._save(job)

    async def watch(self, job_id: str, on_progress: Callable[[str], None] | None = None,
                    timeout: float | None = None) -> dict:
        """Step until the job ends; `on_progress` gets "k/n cell k of n, ..." lines."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.step(job_id)
            if on_progress is not None:
                on_progress(progress_line(job))
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobError(f"job {job_id} still {job['status']} after {timeout:.0f}s")
            await asyncio.sleep(self.poll_interval_s)  # polling remote providers

    async def run(self, path: str | Path, **kwargs: Any) -> dict:
        on_progress = kwargs.pop("on_progress", None)
        job = self.create(path, **kwargs)
        await self.start(job["id"])
        return await self.watch(job["id"], on_progress)

    async def cancel(self, job_id: str) -> dict:
        job = self.get(job_id)
        if job["status"] in TERMINAL:
            return job
        await self._end(job, "cancelled", "cancelled by you")
        return self.get(job_id)

    async def _cancel_attempt(self, a: dict) -> None:
        if a["remote_id"]:
            try:
                await jobs_api.cancel(self.renter.client(a["provider_url"]), a["session_id"],
                                      a["remote_id"])
            except ProviderAPIError:
                pass
        a.update(status="cancelled", ended_at=_now())
        if a["session_id"]:
            await self._stop_session(a)


def progress_line(job: dict) -> str:
    """'k/n text' (the magics turn k/n into a bar) for a job in any state."""
    live = [a for a in job["attempts"] if a["status"] not in TERMINAL] or job["attempts"][-1:]
    a = live[0] if live else None
    cost = f"{job['cost_mist']:,} MIST"
    if job["status"] in TERMINAL:
        head = f"{a['cells']}/{a['cells']} " if a and a["cells"] else ""
        return f"{head}job {job['id']} {job['status']} ({cost})" + \
            (f": {job['error']}" if job["error"] else "")
    if a is None:
        return f"job {job['id']} {job['status']}"
    cells = a["cells"] or 0
    where = f"{a['node']}, attempt {a['n']}"
    if cells:
        return (f"{a['cell']}/{cells} cell {a['cell']} of {cells}, {a['elapsed_s']:.1f} s, "
                f"{cost} ({where})")
    return f"job {job['id']} {a['status']} ({where}), {cost}"
