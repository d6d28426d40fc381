"""The renter's sessions: browse offers, launch on a provider, follow cost, stop.

Flow: offer -> (channel, issue #4) -> provider session -> kernelspec -> kernels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from ..common.keys import KeyPair
from ..common.models import Settlement
from ..common.protocol import MIN_AWAY_S
from ..common.sqlite_store import StorageError
from ..common.tls import TLSError, pinned_url
from ..ledger import Channel, Ledger, LocalLedger, default_ledger_path, walnut_home
from ..ledger.vouchers import Voucher
from .away import parse_away, rungs, step_mist, wanted_top
from .errors import RenterError
from .idle import DEFAULT_COST_MIST, default_idle_stop_s, idle_warning, parse_idle_minutes
from .idle import quote_text as idle_quote
from .kernelspecs import remove_kernelspec, write_kernelspec
from .launch import (
    STARTED,
    OnStep,
    StepLog,
    environment_detail,
    fan_out,
    progress_reporter,
    run_steps,
)
from .offer_filters import image_details
from .payments import RenterPayments
from .provider_client import ProviderAPIError, ProviderClient
from .reputation import decorate_offers, identities
from .requirements import check_requirements
from .results import SessionResults
from .store import ACTIVE, RenterSession, RenterStore, kernel_name
from .verify.runner import verify_session
from .warnings import session_warnings
from .workspace import MAX_TRANSFER_BYTES, WorkspaceClient
from .workspace import sync as folder_sync

log = logging.getLogger("walnut.renter")

_current: RenterManager | None = None
REFRESH_CONCURRENCY = 16  # sessions followed and paid at once by one refresh pass
STOP_TIMEOUT_S = 180.0  # a stop waits for the provider to save the session's results


@dataclass
class _Launch:
    """A launch under way: what its steps find out and hand on to the next ones."""

    provider_url: str
    shape: str
    image: str
    max_seconds: int | None
    budget_mist: int | None
    steps: StepLog
    requirements: str | None = None  # pip requirements the provider installs first
    idle_stop_s: int | None = None  # idle auto-stop (#17); None: the default by price
    report: OnStep | None = None  # the launch's on_step, for progress within a step
    folder: folder_sync.Plan | None = None  # a local folder sent to the workspace (#16)
    client: ProviderClient | None = None
    status: dict = field(default_factory=dict)
    offer: dict = field(default_factory=dict)
    budget: int = 0
    channel: Channel | None = None
    session: RenterSession | None = None


def load_or_create_key(path: Path) -> KeyPair:
    if path.exists():
        return KeyPair.load(path)
    key = KeyPair.generate()
    key.save(path)
    return key


class RenterManager(LoggingConfigurable):
    """The renter's sessions and money; WalnutApp makes it with `parent=`, so its traits
    are configured as `c.RenterManager.<name>`."""

    use_registry = Bool(
        True, config=True,
        help="Offer the providers registered on the ledger besides the configured ones.")
    unreachable_timeout_s = Float(
        300.0, config=True,
        help="Seconds a silent provider's session is kept before it counts as ended.")
    verify_launches = Bool(
        True, config=True,
        help="Check each new session's hardware against its offer (issue #9) before handing "
             "it over; a session that fails the check is stopped.")
    environment_timeout_s = Float(
        1800.0, config=True,
        help="Seconds a provider may take to install a launch's requirements.")
    launch_folder_max_mb = Int(
        MAX_TRANSFER_BYTES // 2**20, config=True,
        help="Largest folder a launch sends to its session (MiB), checked before paying.")
    warn_budget_fraction = Float(
        0.8, config=True, min=0.0, max=1.0,
        help="Warn (session JSON `warnings`, %walnut) once this share of a session's budget "
             "is spent, by the renter's own clock.")
    warn_minutes_before_end = Float(
        5.0, config=True, min=0.0,
        help="Warn this many minutes before a session's end (budget or maximum duration); "
             "a session shorter than four times that is warned in its last quarter.")
    results_dir = Unicode(
        "", config=True,
        help="Folder whose walnut-results/<session>/ receives an ended session's results "
             "when it was launched without a folder; empty: the Jupyter Server's root.")
    results_max_mb = Int(
        10240, config=True, min=0,
        help="Most MiB of one session's results this renter takes from a provider.")
    poll_interval_s = Float(2.0, help="Seconds between session cost refreshes "
                                      "(WalnutApp.poll_interval).")

    def __init__(self, home: Path, provider_urls: list[str] | None = None,
                 key: KeyPair | None = None, ledger: Ledger | None = None,
                 challenge_period_s: int = 600, **kwargs) -> None:
        super().__init__(**kwargs)  # parent= / config=: the traits above
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key = key or load_or_create_key(self.home / "wallet.key")
        self.ledger = ledger if ledger is not None else LocalLedger(default_ledger_path())
        self.network = "local" if isinstance(self.ledger, LocalLedger) else "sui"
        self.payments = RenterPayments(self.ledger, self.key,
                                       challenge_period_s=challenge_period_s, parent=self)
        self.store = RenterStore(self.home / "renter.sqlite")
        self.configured_urls = [u.rstrip("/") for u in (provider_urls or [])]
        self._listeners: dict[str, list[Callable[[RenterSession], None]]] = {}
        self.keep_remote_kernels = False  # set while a server exits keeping its sessions
        self.exiting = False  # set while the server exits: away sessions keep their kernels
        self._poller: asyncio.Task | None = None
        self.trusted_output_providers: set[str] = set()  # WalnutApp.trusted_output_providers
        self.results = SessionResults(self)  # an ended session's files come home (#16)
        # idle auto-stop (issue #17, renter/idle.py), from c.WalnutApp: None = by price
        self.idle_stop_minutes: float | None = None
        self.idle_stop_cost_mist = DEFAULT_COST_MIST
        # issue #17: notebooks the journal sync wrote outputs into, by session, with when;
        # an open JupyterLab tab reloads them (labextension awayOutputs.ts)
        self.outputs_written: dict[str, dict[str, float]] = {}

    # --- the process-wide instance (the provisioner finds the server's manager here) -----

    @classmethod
    def current(cls) -> RenterManager:
        global _current
        if _current is None:
            _current = cls(walnut_home())
        return _current

    def make_current(self) -> None:
        global _current
        _current = self

    @property
    def provider_urls(self) -> list[str]:
        """Configured providers, then those registered on the ledger (pinned by their
        registered certificate fingerprint: trust rooted in the ledger)."""
        urls = list(self.configured_urls)
        if self.use_registry:
            try:
                entries = self.ledger.list_providers()
            except Exception as exc:  # a ledger that cannot list: configured ones only
                log.warning("provider registry unavailable: %s", exc)
                entries = []
            for entry in entries:
                url = pinned_url(entry.endpoint, entry.tls_fingerprint)
                if url not in urls and url.split("#")[0] not in urls:
                    urls.append(url)
        return urls

    def client(self, url: str) -> ProviderClient:
        return ProviderClient(url, self.key)

    # --- offers --------------------------------------------------------------------------

    async def offers(self) -> list[dict]:
        """One row per provider shape, with the provider's live status and latency; a
        provider that cannot be reached or answers nonsense is one unhealthy row saying why
        (its status is schema-checked by ProviderClient), and the others are listed as ever."""

        async def probe(url: str) -> dict:
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(self.client(url).status(), 10)
            except (TimeoutError, ProviderAPIError, OSError, TLSError, ValueError) as exc:
                return {"url": url, "error": (str(exc) or "timed out")[:500]}
            return {"url": url, "status": status,
                    "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}

        probes = await asyncio.gather(*(probe(u) for u in self.provider_urls))
        ids = identities(self)
        rows = []
        for p in probes:
            owner = ids.owner(p["url"], p.get("status", {}).get("provider_address"))
            if "error" not in p and owner not in (None, p["status"]["provider_address"]):
                p["error"] = (f"the node says it is {p['status']['provider_address']}, but "
                              f"the registry entry for this endpoint belongs to {owner}")
            if "error" in p:
                rows.append({"provider_url": p["url"], "healthy": False, "error": p["error"]})
                continue
            st = p["status"]
            for shape in st["shapes"]:
                rows.append({
                    "provider_url": p["url"], "healthy": True, "node": st["node"],
                    "provider_address": st["provider_address"], "region": st["region"],
                    "latency_ms": p["latency_ms"], "runtime": st["runtime"],
                    "shape": shape["name"], "gpus": shape["gpus"],
                    "gpu_model": shape["gpu_model"], "gpu_memory_mb": shape["gpu_memory_mb"],
                    "cpus": shape["cpus"], "memory_mb": shape["memory_mb"],
                    "price_mist_per_second": shape["price_mist_per_second"],
                    "price_mist_per_hour": shape["price_mist_per_hour"],
                    "available": shape["available"],
                    "free_session_slots": st["capacity"]["free_session_slots"],
                    "images": [i["name"] for i in st["images"]],
                    "image_details": image_details(st["images"]),
                    "max_session_seconds": st["max_session_seconds"],
                    "version": st.get("version"),
                    # whether the time the provider spends installing requirements is paid
                    "bills_install": st.get("settlement", {}).get("bills_install", False),
                    # how long and how much of an ended session's files it keeps (#16)
                    "results": _results_offer(st.get("settlement", {}).get("results")),
                })
        return decorate_offers(self, rows)

    # --- sessions ------------------------------------------------------------------------

    async def launch(self, provider_url: str, shape: str, image: str = "python",
                     max_seconds: int | None = None, budget_mist: int | None = None,
                     on_progress: Callable[[str], None] | None = None,
                     verify: bool = True, on_step: OnStep | None = None,
                     requirements: str | None = None,
                     folder: str | Path | None = None,
                     idle_stop_minutes: float | str | None = None) -> RenterSession:
        """The launch pipeline (renter/launch.py): each step is reported to `on_step`
        (and as a line to `on_progress`) and stored with the session once it has one.
        `requirements` (pip requirements text) are installed by the provider before the
        kernel is handed over; they are checked before anything is paid. `folder` (issue
        #16) is sent to the workspace root before the kernelspec appears; its size is
        checked against `launch_folder_max_mb` before anything is paid."""
        if requirements is not None:
            requirements = check_requirements(requirements)  # or a 400, nothing launched
            if not any(line.split("#")[0].strip() for line in requirements.splitlines()):
                requirements = None  # only comments: nothing to install
        job = _Launch(provider_url=provider_url.rstrip("/"), shape=shape, image=image,
                      max_seconds=max_seconds, budget_mist=budget_mist,
                      steps=StepLog(self.store), requirements=requirements,
                      idle_stop_s=parse_idle_minutes(idle_stop_minutes))  # or a 400
        if folder is not None:  # or a 400/413, nothing launched
            job.folder = await asyncio.to_thread(folder_sync.scan, Path(folder))
            job.folder.check_cap(self.launch_folder_max_mb * 2**20)
        steps: list[tuple[str, Callable[[], Awaitable[str | None]]]] = [
            ("quote", lambda: self._quote(job)),
            ("open_channel", lambda: self._open_channel(job)),
            ("create_session", lambda: self._create_session(job)),
        ]
        if requirements is not None:  # issue #15: the provider installs them first
            steps.append(("environment", lambda: self._environment(job)))
        steps.append(("await_running", lambda: self._await_running(job)))
        if verify and self.verify_launches:  # issue #9: check the container against the
            # offer; stops it if it lies
            steps.append(("verify", lambda: self._verify(job)))
        if job.folder is not None:
            steps.append(("workspace", lambda: self._workspace(job)))
        steps.append(("kernelspec", lambda: self._kernelspec(job)))
        job.report = fan_out(job.steps, on_step, on_progress and progress_reporter(on_progress))
        await run_steps(steps, job.report)
        log.info("walnut session %s running on %s", job.session.id, job.session.node)
        return job.session

    async def _quote(self, job: _Launch) -> str:
        """The offer's price and the budget, from the provider's live status."""
        if job.provider_url not in self.provider_urls:
            raise RenterError(400, f"unknown provider {job.provider_url!r}")
        client = self.client(job.provider_url)
        try:
            status = await client.status()
        except ProviderAPIError as exc:
            raise RenterError(502, f"provider unreachable: {exc.message}") from exc
        # the channel pays the address the node reports: never one its registry entry denies
        owner = identities(self).owner(job.provider_url, status["provider_address"])
        if owner not in (None, status["provider_address"]):
            raise RenterError(409, f"the node says it is {status['provider_address']}, but the "
                                   f"registry entry for this endpoint belongs to {owner}; "
                                   "nothing was paid")
        offer = next((s for s in status["shapes"] if s["name"] == job.shape), None)
        if offer is None:
            raise RenterError(400, f"provider {status['node']} has no shape {job.shape!r}")
        price = offer["price_mist_per_second"]
        max_seconds, budget_mist = job.max_seconds, job.budget_mist
        if budget_mist is not None and max_seconds is None:
            if budget_mist <= 0:
                raise RenterError(400, "budget must be a positive amount of MIST")
            max_seconds = budget_mist // price if price else status["max_session_seconds"]
            if max_seconds < 1:
                raise RenterError(400, "budget buys less than one second on this offer")
        max_seconds = min(max_seconds or status["max_session_seconds"],
                          status["max_session_seconds"])
        budget = budget_mist if budget_mist is not None else max_seconds * price
        minimum = price * status.get("settlement", {}).get("min_prepaid_seconds", 0)
        if budget < minimum:
            raise RenterError(400, f"this offer needs a budget of at least {minimum} MIST")
        self.store.check_writable()  # a full disk is found before any money moves
        job.client, job.status, job.offer = client, status, offer
        job.max_seconds, job.budget = max_seconds, budget
        quote = f"{price} MIST/s, budget {budget} MIST for up to {max_seconds} s"
        if job.idle_stop_s is None:  # issue #17: the configured threshold, else by price
            configured = parse_idle_minutes(self.idle_stop_minutes,
                                            "WalnutApp.idle_stop_minutes")
            job.idle_stop_s = configured if configured is not None else default_idle_stop_s(
                price, self.idle_stop_cost_mist)
        quote += ", " + idle_quote(job.idle_stop_s)
        if job.requirements is not None:
            billed = status.get("settlement", {}).get("bills_install", False)
            quote += (", installing the requirements is billed" if billed else
                      ", installing the requirements is not billed")
        return quote

    async def _open_channel(self, job: _Launch) -> str:
        job.channel = await self.payments.open(job.status["provider_address"],
                                               job.offer["price_mist_per_second"],
                                               job.budget)  # or LedgerError
        return job.channel.channel_id

    async def _create_session(self, job: _Launch) -> str:
        status, offer, channel_id = job.status, job.offer, job.channel.channel_id
        try:
            extra = {} if job.requirements is None else {"requirements": job.requirements}
            created = await job.client.create_session(image=job.image, shape=job.shape,
                                                      max_seconds=job.max_seconds,
                                                      channel_id=channel_id,
                                                      idle_stop_s=job.idle_stop_s or 0, **extra)
        except ProviderAPIError as exc:
            # a provider that refused closes the channel itself; if it could not be
            # reached, the refresh loop recovers the deposit after the challenge period
            job.steps.attach(self._record_unused_channel(channel_id, job.provider_url,
                                                         status, exc.message))
            raise RenterError(exc.status if 400 <= exc.status < 500 else 502,
                              exc.message) from exc
        session = RenterSession(
            id=created["id"], provider_url=job.provider_url,
            provider_address=status["provider_address"], node=status["node"],
            shape=job.shape, image=job.image, gpus=offer["gpus"],
            gpu_model=offer["gpu_model"], cpus=offer["cpus"], memory_mb=offer["memory_mb"],
            price_mist_per_second=offer["price_mist_per_second"],
            max_seconds=job.max_seconds, budget_mist=job.budget, status="starting",
            created_at=time.time(), access_token=created["access_token"],
            channel_id=channel_id, deposit_mist=job.budget, settlement=Settlement.OPEN,
            extra={"idle_stop_s": job.idle_stop_s or 0,
                   **({} if job.requirements is None else {"requirements": job.requirements})},
        )
        try:
            self.store.insert(session)
        except StorageError:
            # unrecorded, the session could not be paid for or stopped later: stop it now,
            # and the provider's settlement refunds the channel
            await self._stop_unrecorded(job.client, session.id)
            raise
        job.session = session
        job.steps.attach(session.id)  # from here on, the steps are stored with it
        return session.id

    async def _environment(self, job: _Launch) -> str:
        """Follow the provider installing the requirements (contract C4): each report is
        kept with the session and shown as this step's detail, live."""
        session_id = job.session.id
        last: dict = {}

        def seen(remote: dict) -> None:
            env = remote.get("environment")
            if not isinstance(env, dict) or env == last:
                return
            last.clear()
            last.update(env)
            fresh = self.store.get(session_id)
            self.store.update(session_id, extra={**fresh.extra, "environment": env})
            detail = environment_detail(env)
            if detail and env.get("state") != "failed":
                job.report("environment", STARTED, detail)

        try:
            await job.client.wait_environment(session_id, self.environment_timeout_s, seen)
        except ProviderAPIError as exc:
            failed = environment_detail(last) if last.get("state") == "failed" else ""
            reason = failed or exc.message
            if exc.status != 409:  # still starting there (timed out, unreachable): stop it
                await self._stop_unrecorded(job.client, session_id)
            self.store.update(session_id, status="failed", reason=reason[:8000],
                              ended_at=time.time())
            # the container never ran for the renter: the provider refunds the deposit
            raise RenterError(502, f"the session did not start: {reason} (nothing was "
                                   "charged: the deposit comes back in full)") from exc
        return environment_detail(last) or "the provider reported no environment"

    async def _await_running(self, job: _Launch) -> None:
        session_id = job.session.id
        try:
            remote = await job.client.wait_running(session_id)
        except ProviderAPIError as exc:
            self.store.update(session_id, status="failed", reason=exc.message,
                              ended_at=time.time())
            raise RenterError(502, f"session failed to start: {exc.message}") from exc
        self.store.update(session_id, status="running", started_at=time.time(),
                          running_seconds=remote["running_seconds"],
                          cost_mist=remote["cost_mist"])
        job.session = self.store.get(session_id)

    async def _verify(self, job: _Launch) -> None:
        await verify_session(self, job.session)  # a session that fails it is stopped
        job.session = self.store.get(job.session.id)

    async def _workspace(self, job: _Launch) -> str:
        """Sync the launch's folder into the workspace root (the kernel starts there), its
        size stated first and progress live; a failure stops the session."""
        plan, session = job.folder, job.session
        job.report("workspace", STARTED, f"sending {len(plan.files)} files, "
                                         f"{folder_sync.human_bytes(plan.size)}")
        last = [0.0]

        def seen(p) -> None:
            if time.monotonic() - last[0] >= 0.5 or p.done == p.total:
                last[0] = time.monotonic()
                job.report("workspace", STARTED,
                           f"sent {folder_sync.human_bytes(p.done)} of "
                           f"{folder_sync.human_bytes(p.total)} (file {p.file} of {p.files})")

        client = WorkspaceClient(job.client, session.id, session.access_token,
                                 max_bytes=self.launch_folder_max_mb * 2**20)
        try:
            result = await client.push_folder(plan, "", progress=seen)
        except Exception as exc:
            await self.stop(session.id, reason=f"sending the folder failed: {exc}")
            raise
        self.store.update(session.id, extra={**self.get(session.id).extra,
                                             "folder": str(plan.root),
                                             "workspace": result.public()})
        job.session = self.get(session.id)
        return result.summary()

    async def _kernelspec(self, job: _Launch) -> str:
        write_kernelspec(job.session)
        return kernel_name(job.session.id)

    async def _stop_unrecorded(self, client: ProviderClient, session_id: str) -> None:
        try:
            await client.stop_session(session_id)
        except ProviderAPIError as exc:
            log.error("could not stop unrecorded session %s: %s", session_id, exc.message)

    def _record_unused_channel(self, channel_id: str, provider_url: str, status: dict,
                               reason: str) -> str:
        """Keep a refused launch's channel on disk so its deposit is recovered."""
        now = time.time()
        session_id = "x-" + channel_id[2:18]
        self.store.insert(RenterSession(
            id=session_id, provider_url=provider_url,
            provider_address=status["provider_address"], node=status["node"], shape="-",
            image="-", gpus=0, cpus=0, memory_mb=0, price_mist_per_second=0, max_seconds=0,
            budget_mist=0, status="failed", reason=f"launch refused: {reason}",
            created_at=now, started_at=None, ended_at=now, access_token="",
            channel_id=channel_id, settlement=Settlement.OPEN, extra={"launch_failed": True},
        ))
        return session_id

    async def top_up(self, session_id: str, amount_mist: int) -> RenterSession:
        s = self.get(session_id)
        if s.status not in ACTIVE or s.channel_id is None:
            raise RenterError(409, f"session {session_id} is {s.status}")
        if isinstance(amount_mist, bool) or not isinstance(amount_mist, int) or amount_mist <= 0:
            raise RenterError(400, "amount_mist must be a positive integer")
        channel = await self.payments.top_up(s.channel_id, amount_mist)  # or LedgerError
        self.store.update(s.id, budget_mist=s.budget_mist + amount_mist)
        self.store.update_money(s.id, monotonic="deposit_mist", deposit_mist=channel.deposited)
        try:  # the provider checks the ledger itself; this only saves it the wait
            remote = await self.client(s.provider_url).top_up_session(s.id)
        except ProviderAPIError as exc:
            log.warning("provider not told of the top-up of %s (it reads the ledger on its "
                        "own): %s", s.id, exc.message)
        else:
            self.store.update(s.id, max_seconds=remote["max_seconds"])
        return self.get(session_id)

    async def pay(self, s: RenterSession, provider_cost_mist: int) -> None:
        """Sign and send the voucher that covers the metered cost so far."""
        voucher = self.payments.voucher_for(s, provider_cost_mist)
        if voucher is None:
            return
        try:
            await self.client(s.provider_url).send_voucher(s.id, voucher.amount_mist,
                                                           voucher.signature)
        except ProviderAPIError as exc:
            log.warning("voucher for %s not delivered: %s", s.id, exc.message)
            return
        self.store.update_money(s.id, monotonic="voucher_mist", voucher_mist=voucher.amount_mist)

    async def settle(self) -> None:
        """Follow the money of ended sessions until their channel is closed."""
        for s in self.store.list(statuses=("stopped", "failed")):
            if s.channel_id is None or s.settlement in (Settlement.SETTLED, Settlement.NONE):
                continue
            state = await self.payments.settlement_state(s)
            self.store.update_money(s.id, **state)

    def get(self, session_id: str) -> RenterSession:
        s = self.store.get(session_id)
        if s is None:
            raise RenterError(404, f"no session {session_id!r}")
        return s

    async def stop(self, session_id: str, reason: str = "stopped by you") -> RenterSession:
        s = self.get(session_id)
        if s.status in ACTIVE:
            try:  # the provider saves the session's results before it answers (#16)
                remote = await ProviderClient(s.provider_url, self.key,
                                              timeout=STOP_TIMEOUT_S).stop_session(s.id)
                self.store.update(s.id, running_seconds=remote["running_seconds"],
                                  cost_mist=remote["cost_mist"])
            except ProviderAPIError as exc:
                remote = None
                log.warning("provider did not confirm the stop of %s: %s", s.id, exc.message)
            self._end(s.id, "stopped", reason)
            if remote is not None:  # the final voucher: the provider settles on receipt
                await self.pay(self.get(s.id), remote["cost_mist"])
        return self.get(session_id)

    def _end(self, session_id: str, status: str, reason: str) -> None:
        if self.get(session_id).status not in ACTIVE:
            return
        self.store.update(session_id, status=status, reason=reason, ended_at=time.time())
        remove_kernelspec(session_id)
        self.results.ended(session_id)  # whoever ended it: its files come home
        final = self.get(session_id)
        for listener in self._listeners.pop(session_id, []):
            try:
                listener(final)
            except Exception:
                log.exception("session-end listener failed")

    def on_end(self, session_id: str, listener: Callable[[RenterSession], None]) -> None:
        self._listeners.setdefault(session_id, []).append(listener)

    async def refresh(self) -> None:
        """Follow running sessions on their providers: cost so far, and ends we did not ask.
        Sessions are followed and paid concurrently (at most REFRESH_CONCURRENCY at once):
        one after another, a pass over many sessions outlasted the provider's grace and
        their vouchers fell behind (issue #18)."""
        gate = asyncio.Semaphore(REFRESH_CONCURRENCY)

        async def follow(s: RenterSession) -> None:
            async with gate:
                try:
                    await self._refresh_one(s)
                except Exception:  # one session's failure must not stop the others' pay
                    log.exception("refreshing walnut session %s failed", s.id)

        await asyncio.gather(*(follow(s) for s in self.store.list(statuses=("running",))))
        await self.settle()
        await self.results.retry_once()  # results not fetched yet, while the provider keeps them

    async def _refresh_one(self, s: RenterSession) -> None:
        try:
            remote = await self.client(s.provider_url).get_session(s.id)
        except ProviderAPIError as exc:
            if exc.status == 404:
                self._end(s.id, "failed", "the provider no longer knows this session")
            elif exc.status == 0:
                self._unreachable(s, exc.message)
            return
        s = self.get(s.id)
        if s.status not in ACTIVE:
            # stopped while this read was in flight: the stop recorded the final cost and
            # paid it; this older figure must not overwrite it
            return
        if "unreachable_since" in s.extra:
            self.store.update(s.id, extra={k: v for k, v in s.extra.items()
                                           if k != "unreachable_since"})
        self.store.update(s.id, running_seconds=remote["running_seconds"],
                          cost_mist=remote["cost_mist"])
        if remote.get("usage"):
            fresh = self.get(s.id)
            self.store.update(s.id, extra={**fresh.extra, "usage": remote["usage"]})
        self._seen_idle(s.id, remote)
        if remote["status"] not in ACTIVE:
            self._end(s.id, remote["status"], remote["reason"] or "ended by the provider")
        await self.pay(self.get(s.id), remote["cost_mist"])
        await self._keep_away_ladder(self.get(s.id))

    def _unreachable(self, s: RenterSession, why: str) -> None:
        """A provider gone quiet: after `unreachable_timeout_s` the session is over for us:
        no more vouchers, and its deposit comes back after the channel's challenge period."""
        since = s.extra.get("unreachable_since")
        now = time.time()
        if since is None:
            self.store.update(s.id, extra={**s.extra, "unreachable_since": now})
        elif now - since > self.unreachable_timeout_s and not s.is_away(now):
            self._end(s.id, "failed", f"the provider has been unreachable for "
                                      f"{int(now - since)}s ({why})")

    async def session_alive(self, session_id: str) -> tuple[bool, str]:
        """Asked by a kernel bridge that lost its connection."""
        s = self.get(session_id)
        if s.status not in ACTIVE:
            return False, f"the session {s.status}: {s.reason}"
        try:
            remote = await self.client(s.provider_url).get_session(s.id)
        except ProviderAPIError as exc:
            if exc.status == 404:
                self._end(s.id, "failed", "the provider no longer knows this session")
                return False, "the provider no longer knows this session"
            return True, ""  # unreachable: keep trying until the bridge's deadline
        if remote["status"] not in ACTIVE:
            # the ended session's own figures first: a stale cost must not be its final one
            self.store.update(s.id, running_seconds=remote["running_seconds"],
                              cost_mist=remote["cost_mist"])
            self._end(s.id, remote["status"], remote["reason"])
            return False, f"the session {remote['status']}: {remote['reason']}"
        return True, ""

    def warnings(self, s: RenterSession) -> list[dict]:
        """Warnings before the session's end (renter/warnings.py), by the renter's clock,
        and before an idle stop (renter/idle.py), by the provider's idle clock."""
        out = session_warnings(s, budget_fraction=self.warn_budget_fraction,
                               minutes_before_end=self.warn_minutes_before_end)
        idle = idle_warning(s, self.warn_minutes_before_end)
        return out + ([idle] if idle else [])

    # --- idle auto-stop (issue #17, renter/idle.py) -----------------------------------

    def _seen_idle(self, session_id: str, remote: dict) -> None:
        """Keep the provider's idle status (schema-checked by ProviderClient) as seen now."""
        idle = remote.get("idle")
        if isinstance(idle, dict):
            fresh = self.get(session_id)
            self.store.update(session_id, extra={**fresh.extra, "idle": {
                **idle, "seen_at": time.time()}})

    async def set_idle_stop(self, session_id: str, minutes: float | str | None = None
                            ) -> RenterSession:
        """A running session's new idle threshold (minutes; 0 or "off": never), or with
        None the same one again: "keep running", which starts the idle clock again."""
        s = self.get(session_id)
        if s.status not in ACTIVE:
            raise RenterError(409, f"session {session_id} is {s.status}")
        seconds = parse_idle_minutes(minutes)
        if seconds is None:
            seconds = int(s.extra.get("idle_stop_s") or 0)
        try:
            remote = await self.client(s.provider_url).set_idle_stop(s.id, seconds)
        except ProviderAPIError as exc:
            raise RenterError(exc.status if 400 <= exc.status < 500 else 502,
                              exc.message) from exc
        self.store.update(s.id, extra={**self.get(s.id).extra, "idle_stop_s": seconds})
        self._seen_idle(s.id, remote)
        return self.get(s.id)

    # --- away mode (issue #17, renter/away.py) --------------------------------------------

    def note_outputs_written(self, session_id: str, path: str) -> None:
        """The journal sync wrote outputs made while this server was away into `path` (a
        notebook's API path): the sidebar's poll tells an open tab to reload it."""
        written = self.outputs_written.setdefault(session_id, {})
        written.pop(path, None)
        written[path] = time.time()
        while len(written) > 64:  # notebooks of one session: a bound, not a history
            written.pop(next(iter(written)))

    def outputs_written_view(self, session_id: str) -> list[dict]:
        return [{"path": p, "at": at} for p, at in self.outputs_written.get(session_id, {}).items()]

    def keeps_remote_kernel(self, session_id: str) -> bool:
        """Whether a kernel shut down with this server stays on its session (and its running
        cell is not interrupted): all of them when the server exits keeping its sessions, an
        away session's whenever the server exits. A kernel the user shuts down goes."""
        if self.keep_remote_kernels:
            return True
        s = self.store.get(session_id)
        return self.exiting and s is not None and s.is_away()

    async def set_away(self, session_id: str, budget_mist: object = None,
                       seconds: object = None) -> RenterSession:
        """Away mode on for `seconds`, trusting the provider with at most `budget_mist`
        beyond what is paid; both None: off."""
        s = self.get(session_id)
        if s.status not in ACTIVE or s.channel_id is None:
            raise RenterError(409, f"session {session_id} is {s.status}")
        client = self.client(s.provider_url)
        try:
            if budget_mist is None and seconds is None:
                await client.end_away(s.id)
                self._clear_away(s.id)
                return self.get(s.id)
            budget, secs = parse_away(budget_mist, seconds)  # or 400
            top = wanted_top(s.voucher_mist, budget, s.deposit_mist)
            if top <= s.voucher_mist:
                raise RenterError(409, "the deposit is paid out: top up before going away")
            held = s.away_top_mist if s.is_away() else 0
            if held and top <= held:  # a smaller bound: the provider drops what it holds
                await client.end_away(s.id)
                held = 0
            amounts = rungs(max(held, s.voucher_mist), top,
                            step_mist(s.price_mist_per_second, budget))
            await client.set_away(s.id, secs, self._signed(s, amounts))
        except ProviderAPIError as exc:
            raise RenterError(exc.status if 400 <= exc.status < 500 else 502,
                              exc.message) from exc
        self.store.update_money(s.id, away_budget_mist=budget, away_top_mist=top,
                                away_until=time.time() + secs)
        log.info("session %s away for %ds: the provider may claim up to %d MIST (paid %d)",
                 s.id, secs, top, s.voucher_mist)
        return self.get(s.id)

    def _clear_away(self, session_id: str) -> None:
        self.store.update_money(session_id, away_budget_mist=0, away_top_mist=0,
                                away_until=None)

    def _signed(self, s: RenterSession, amounts: list[int]) -> list[tuple[int, bytes]]:
        return [(a, Voucher.sign(self.key, s.channel_id, a).signature) for a in amounts]

    async def _keep_away_ladder(self, s: RenterSession) -> None:
        """While online, keep the ladder's top at paid + away budget (its trust bound), one
        rung at a time; a leave that is over is cleared."""
        now = time.time()
        if not s.away_budget_mist:
            return
        if not s.is_away(now) or s.away_until - now < MIN_AWAY_S:
            if s.away_until is not None and now >= s.away_until:
                self._clear_away(s.id)
            return
        step = step_mist(s.price_mist_per_second, s.away_budget_mist)
        top = wanted_top(s.voucher_mist, s.away_budget_mist, s.deposit_mist)
        if top <= s.away_top_mist or (top - s.away_top_mist < step and top < s.deposit_mist):
            return
        amounts = rungs(s.away_top_mist, top, step)
        try:
            await self.client(s.provider_url).set_away(s.id, int(s.away_until - now),
                                                       self._signed(s, amounts))
        except ProviderAPIError as exc:
            log.warning("away vouchers for %s not delivered: %s", s.id, exc.message)
            return
        self.store.update_money(s.id, monotonic="away_top_mist", away_top_mist=top)

    def results_root(self) -> str:
        """Where results of sessions launched without a folder go: `results_dir`, else
        the Jupyter Server's root directory (the app that made this manager)."""
        if self.results_dir:
            return self.results_dir
        server = getattr(self.parent, "serverapp", None)
        return str(getattr(server, "root_dir", "") or "")

    def start_polling(self) -> None:
        async def loop() -> None:
            while True:  # a pass every poll_interval_s, however long the pass took
                started = time.monotonic()
                try:
                    await self.refresh()
                except Exception:
                    log.exception("refreshing walnut sessions failed")
                await asyncio.sleep(max(0.0, self.poll_interval_s
                                        - (time.monotonic() - started)))

        if self._poller is None:
            self._poller = asyncio.ensure_future(loop())

    def restore_kernelspecs(self) -> None:
        """After a server restart: specs for sessions still running, none for ended ones."""
        for s in self.store.list():
            if s.status == "running":
                write_kernelspec(s)
            else:
                remove_kernelspec(s.id)

    async def shutdown(self, stop_sessions: bool = True) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        await self.results.close()
        self.keep_remote_kernels = not stop_sessions
        self.exiting = True
        if stop_sessions:
            for s in self.store.list(statuses=ACTIVE):
                if not s.is_away():  # an away session runs on without this server
                    await self.stop(s.id, reason="Jupyter Server shut down")


def _results_offer(terms: object) -> dict | None:
    """An offer's results terms (issue #16), only as numbers it may hold."""
    if not isinstance(terms, dict):
        return None
    out = {}
    for key in ("keep_hours", "max_mb", "price_mist_per_gb_hour"):
        value = terms.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return None
        out[key] = value
    return out
