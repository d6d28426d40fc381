"""IPython magics: `%walnut ...` and `%%walnut run`. Load with `%load_ext jupyter_walnut`.

Everything async runs on a private event loop in a background thread (jobs.loop), because
ipykernel's own loop is already running on the main thread. Outputs and progress coming
from that loop are handed to the main thread through a queue and displayed there, so they
land in the cell that asked for them.
"""

from __future__ import annotations

import argparse
import html
import os
import queue
import shlex
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import clear_output, display, publish_display_data
from traitlets import Enum, Float, Int, List, Unicode
from traitlets.config import Configurable

from ..common.errors import WalnutError
from ..common.money import format_sui
from ..common.remote_kernel import KernelError, RemoteKernel
from ..ledger import LocalLedger, default_ledger_path
from . import drift
from .away import trust_bound
from .jobs import loop, transfer
from .jobs.cli_args import (
    add_job_arguments,
    add_sweep_arguments,
    run_job_command,
    run_sweep_command,
)
from .jobs.manager import JobManager
from .jobs.offers import choose_offer, filter_offers
from .jobs.tables import Table, mist
from .jobs.transfer import SERIALIZERS
from .kernel.output_policy import sanitize
from .manager import RenterManager
from .offer_filters import filter_offers as filter_images
from .offer_filters import image_label, parse_image_filter
from .requirements import (
    read_requirements_file,
    requirements_from_notebook,
    requirements_from_sources,
)
from .store import ACTIVE
from .workspace import MAX_TRANSFER_BYTES, TransferResult, WorkspaceClient
from .workspace.sync import human_bytes

HELP = """\
Walnut: rent remote kernels by the second, from code.

  %walnut providers [--shape S] [--gpus N] [--max-price MIST] [--available] [--provider URL]
                    [--image NAME] [--package 'torch>=2'] [--cuda [VERSION]]
  %walnut launch [--offer O] [--budget MIST | --max-seconds N] [--image NAME]
                 [--requirements FILE | --requirements-from-notebook [NOTEBOOK]]
                 [--folder [DIR]] [--idle-stop MIN|off]
  %walnut idle MIN|off [--session ID]      stop a session after MIN minutes idle (off: never)
  %walnut away MIST --hours H | off [--session ID]   keep running while this server is gone
  %walnut sessions [--all]
  %walnut push PATH [DEST] [--session ID]   files and folders into the session's workspace
  %walnut pull PATH [DEST] [--session ID]   and back (checksummed, resumed after a cut)
  %walnut stop SESSION_ID | --all
  %walnut balance
  %%walnut run [--session ID | --offer O] [--push a,b] [--pull c,d] [--serializer S]
  %walnut job submit PATH [--files a,b] [--offer O] [--budget MIST] [--param k=v ...]
  %walnut job list | status ID | watch ID | results ID | cancel ID
  %walnut sweep PATH --grid k=v1,v2 [...] --budget MIST [--concurrency N] [--metric M]
  %walnut help

An offer O is a row number of the last `providers` listing, a shape name (cheapest
healthy offer of it), SHAPE@PROVIDER_URL, or a provider URL. Amounts are integer MIST.
Providers come from `%config WalnutMagics.providers = [...]`, $WALNUT_PROVIDERS or
`--provider URL`. `%walnut COMMAND --help` explains each command.
"""


class _HelpShown(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as a one-line UsageError and never exits the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr)
        raise _HelpShown()


def _csv(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for n in names:
        if not n.isidentifier():
            raise UsageError(f"not a variable name: {n!r}")
    return names


def _parsers() -> dict[str, _Parser]:
    p: dict[str, _Parser] = {}

    def new(name: str, help_: str) -> _Parser:
        p[name] = _Parser(prog=f"%walnut {name}", description=help_, add_help=True)
        return p[name]

    pr = new("providers", "List offers from the configured providers, cheapest first.")
    pr.add_argument("--shape", help="only this shape")
    pr.add_argument("--gpus", type=int, help="at least this many GPUs")
    pr.add_argument("--max-price", type=int, metavar="MIST", help="MIST per second at most")
    pr.add_argument("--available", action="store_true", help="only offers with free capacity")
    pr.add_argument("--image", metavar="NAME", help="only offers with an image of this name")
    pr.add_argument("--package", action="append", default=[], metavar="REQ",
                    help="only images with this package version, e.g. 'torch>=2' (repeatable)")
    pr.add_argument("--cuda", nargs="?", const="any", metavar="VERSION",
                    help="only images with CUDA (of this version, e.g. 12 or '>=12.1')")
    pr.add_argument("--provider", action="append", default=[], metavar="URL",
                    help="also ask this provider (remembered for this kernel)")

    la = new("launch", "Start a session on an offer and wait until it runs.")
    la.add_argument("--offer", help="row number, SHAPE, SHAPE@URL or URL (default: cheapest)")
    la.add_argument("--budget", type=int, metavar="MIST", help="most this session may cost")
    la.add_argument("--max-seconds", type=int, help="longest it may run")
    la.add_argument("--image", default="python", help="image name from the offer")
    la.add_argument("--provider", action="append", default=[], metavar="URL")
    env = la.add_mutually_exclusive_group()
    env.add_argument("--requirements", metavar="FILE",
                     help="pip requirements the provider installs before the kernel starts")
    env.add_argument("--requirements-from-notebook", nargs="?", const="", metavar="NOTEBOOK",
                     help="the packages NOTEBOOK (default: this one) imports, at the "
                          "versions installed here")

    la.add_argument("--folder", nargs="?", const=".", metavar="DIR",
                    help="send DIR (default: this folder) to the session first, minus "
                         ".gitignore/.walnutignore, so relative paths work there unchanged")

    la.add_argument("--idle-stop", metavar="MIN",
                    help="stop the session after MIN minutes with its kernels idle (off: "
                         "never; default: by the offer's price, 10 min to 3 h)")
    idle = new("idle", "Change a running session's idle auto-stop; its idle clock starts "
                       "again.")
    idle.add_argument("minutes", metavar="MIN|off", help="minutes idle before it stops")
    idle.add_argument("--session", help="session id (default: the only running session)")

    away = new("away", "Keep a session running while this Jupyter Server is gone (a closed "
                       "laptop), trusting its provider with at most MIST beyond what is paid.")
    away.add_argument("budget", metavar="MIST|off", help="away budget in MIST, or off")
    away.add_argument("--hours", type=float, default=8.0, help="how long (default 8)")
    away.add_argument("--session", help="session id (default: the only running session)")

    for name, text in (("push", "Send a file or folder to a session's workspace: a folder "
                                "minus .gitignore/.walnutignore, unchanged files skipped."),
                       ("pull", "Bring a file or folder of a session's workspace here.")):
        tr = new(name, text + " Checksummed, and resumed after a network cut.")
        tr.add_argument("path", help="local path" if name == "push" else "workspace path")
        tr.add_argument("dest", nargs="?", default="",
                        help="workspace path" if name == "push" else "local path")
        tr.add_argument("--session", help="session id (default: the only running session)")

    se = new("sessions", "Your sessions with their cost so far.")
    se.add_argument("--all", action="store_true", help="include ended sessions")

    st = new("stop", "Stop a session (and pay only for the time used).")
    st.add_argument("session_id", nargs="?")
    st.add_argument("--all", action="store_true", help="stop every running session")

    new("balance", "Wallet address, ledger balance and what running sessions cost so far.")

    ru = new("run", "Run this cell on a remote kernel and stream its outputs here.")
    ru.add_argument("--session", help="session id (default: the only running session)")
    ru.add_argument("--offer", help="launch a new session on this offer for the cell")
    ru.add_argument("--budget", type=int, metavar="MIST", help="budget of a new session")
    ru.add_argument("--push", help="local variables to send first, comma-separated")
    ru.add_argument("--pull", help="remote variables to bring back after, comma-separated")
    ru.add_argument("--serializer", choices=SERIALIZERS,
                    help="data (default): pulls never unpickle; pickle or cloudpickle: unpickle "
                         "pulls, which lets the provider run code here (trusted providers only)")
    ru.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    ru.add_argument("--provider", action="append", default=[], metavar="URL")
    ru.add_argument("-v", "--verbose", action="store_true", help="print transfer timings")

    add_job_arguments(new("job", "Batch jobs that run unattended on a provider."))
    add_sweep_arguments(new("sweep", "Run one notebook over a grid of parameters."))
    return p


class Events:
    """Queue from the private loop to the main thread: (kind, payload) pairs."""

    DONE = object()

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def emit(self, kind: str, payload: Any = None) -> None:
        self.q.put((kind, payload))

    def pump(self, coro: Coroutine, handle: Callable[[str, Any], None],
             on_interrupt: Callable[[], None] | None = None) -> Any:
        """Run `coro` on the private loop; handle its events here until it finishes."""

        async def wrapped():
            try:
                return await coro
            finally:
                self.q.put(self.DONE)

        future = loop.submit(wrapped())
        while True:
            try:
                item = self.q.get()
            except KeyboardInterrupt:
                if on_interrupt is None:
                    future.cancel()
                    raise
                on_interrupt()
                continue
            if item is self.DONE:
                break
            handle(*item)
        return future.result()


class Progress:
    """A progress line: an updating display in Jupyter, a carriage-return line elsewhere."""

    def __init__(self, shell) -> None:
        self.in_kernel = getattr(shell, "kernel", None) is not None
        self._handle = None
        self._width = 0

    @staticmethod
    def bar(frac: float | None, width: int = 24) -> str:
        if frac is None:
            return ""
        filled = int(max(0.0, min(1.0, frac)) * width)
        return "[" + "#" * filled + "." * (width - filled) + f"] {frac * 100:3.0f}%  "

    def update(self, text: str, frac: float | None = None) -> None:
        line = self.bar(frac) + text
        if self.in_kernel:
            bundle = {"text/plain": line}
            if frac is not None:
                bundle["text/html"] = (f"<progress value='{frac:.3f}' max='1' "
                                       f"style='width:16em'></progress> {_esc(text)}")
            if self._handle is None:
                self._handle = display(bundle, raw=True, display_id=True)
            else:
                self._handle.update(bundle, raw=True)
        else:
            pad = max(0, self._width - len(line))
            sys.stderr.write("\r" + line + " " * pad)
            sys.stderr.flush()
            self._width = len(line)

    def close(self, text: str | None = None) -> None:
        if text:
            self.update(text, 1.0)
        if not self.in_kernel and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _esc(text: str) -> str:
    return html.escape(text)


class RemoteError(Exception):
    """An error raised by the remote cell; IPython shows the remote traceback only."""

    def __init__(self, error: dict) -> None:
        super().__init__(f"{error.get('ename')}: {error.get('evalue')}")
        self.remote = error

    def _render_traceback_(self) -> list[str]:
        return list(self.remote.get("traceback") or [str(self)])


def remote_error(error: dict) -> RemoteError:
    """A RemoteError whose class name is the remote exception's, so the cell says
    `ZeroDivisionError`, not `RemoteError`."""
    name = str(error.get("ename") or "RemoteError")
    cls = type(name if name.isidentifier() else "RemoteError", (RemoteError,), {})
    return cls(error)


@magics_class
class WalnutMagics(Magics, Configurable):
    providers = List(Unicode(), config=True,
                     help="Provider URLs to offer (also $WALNUT_PROVIDERS, comma-separated).")
    max_transfer_mb = Int(200, config=True,
                          help="Largest single variable %%walnut run moves, in MB.")
    serializer = Enum(list(SERIALIZERS), "data", config=True,
                      help="data: pulls accept plain values, NumPy arrays and pandas objects "
                           "only, never a pickle; pickle/cloudpickle let the provider's kernel "
                           "run code here (an opt-in that warns).")
    default_max_seconds = Int(3600, config=True,
                              help="Longest a session launched without a budget may run.")
    kernel_timeout = Float(60.0, config=True,
                           help="Seconds to wait for a remote kernel to start or answer.")
    max_push_mb = Int(MAX_TRANSFER_BYTES // 2**20, config=True,
                      help="Most one %walnut push or pull moves, in MiB (the file browser's "
                           "limit too).")

    def __init__(self, shell=None, **kwargs: Any) -> None:
        Configurable.__init__(self, config=shell.config if shell is not None else None)
        Magics.__init__(self, shell=shell, **kwargs)
        self._parsers = _parsers()
        self._kernels: dict[str, Any] = {}  # session id -> RemoteKernel
        self._listed: list[dict] = []
        self._extra_providers: list[str] = []
        self.last_run: dict[str, float] = {}  # timings of the last %%walnut run

    # --- plumbing -------------------------------------------------------------------------

    @property
    def manager(self):
        m = RenterManager.current()
        env = [u.strip() for u in os.environ.get("WALNUT_PROVIDERS", "").split(",")]
        for url in [*self.providers, *env, *self._extra_providers]:
            url = url.strip().rstrip("/")
            if url and url not in m.provider_urls:
                m.configured_urls.append(url)
        return m

    def _add_providers(self, urls: list[str]) -> None:
        for u in urls:
            if u.rstrip("/") not in self._extra_providers:
                self._extra_providers.append(u.rstrip("/"))

    @line_cell_magic
    def walnut(self, line: str, cell: str | None = None) -> Any:
        """Walnut: remote kernels, batch jobs and sweeps. `%walnut help` lists commands."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"walnut: {exc}") from exc
        if not words or words[0] in ("help", "-h", "--help"):
            print(HELP)
            return None
        command, rest = words[0], words[1:]
        if command not in self._parsers:
            raise UsageError(f"walnut: unknown command {command!r}; see `%walnut help`")
        if command == "run" and cell is None:
            raise UsageError("walnut: `run` is a cell magic: start the cell with %%walnut run")
        if command != "run" and cell is not None:
            raise UsageError(f"walnut: `{command}` is a line magic (%walnut {command})")
        try:
            args = self._parsers[command].parse_args(rest)
        except _HelpShown:
            return None
        if hasattr(args, "provider"):
            self._add_providers(args.provider)
        try:
            return getattr(self, f"_cmd_{command}")(args, cell)
        except (UsageError, RemoteError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise UsageError(_one_line(exc)) from None

    # --- offers and sessions --------------------------------------------------------------

    def _offers(self) -> list[dict]:
        manager = self.manager
        if not manager.provider_urls:
            raise UsageError("walnut: no providers configured; use --provider URL, "
                             "$WALNUT_PROVIDERS or %config WalnutMagics.providers")
        return loop.run(manager.offers())

    def _cmd_providers(self, args, cell) -> Table:
        wanted = parse_image_filter(args.image, args.package, args.cuda)  # before any asking
        rows = filter_offers(self._offers(), shape=args.shape, gpus=args.gpus,
                             max_price=args.max_price, available_only=args.available)
        rows = filter_images(rows, wanted)
        rows.sort(key=lambda o: (not o.get("healthy"), o.get("price_mist_per_second", 0)))
        self._listed = rows
        table = Table(["#", "provider", "shape", "gpus", "cpus", "memory", "MIST/s",
                       "MIST/h", "free", "latency", "region", "images"], [
            [i, o.get("node", o["provider_url"]), o.get("shape", "-"),
             f"{o['gpus']} x {o['gpu_model']}" if o.get("gpu_model") else o.get("gpus", ""),
             o.get("cpus", ""), f"{o['memory_mb']} MB" if "memory_mb" in o else "",
             mist(o.get("price_mist_per_second")), mist(o.get("price_mist_per_hour")),
             ("yes" if o["available"] else "no") if o.get("healthy") else
             f"down: {o.get('error', '')}"[:40],
             f"{o['latency_ms']} ms" if "latency_ms" in o else "", o.get("region", ""),
             _images_cell(o)]
            for i, o in enumerate(rows)], title=f"{len(rows)} offer(s)")
        return table

    def _launch(self, offer_spec: str | None, budget: int | None, max_seconds: int | None,
                image: str = "python", requirements: str | None = None,
                folder: str | None = None):
        offer = choose_offer(self._offers(), offer_spec, listed=self._listed)
        if budget is None and max_seconds is None:
            max_seconds = self.default_max_seconds
        progress = Progress(self.shell)
        steps = ["contacting provider", "opening payment channel",
                 "starting session container", "ready"]
        events = Events()

        reached = [0]

        def handle(kind: str, step: str) -> None:
            # an environment line ("environment: installing 3 of 7: pandas") keeps the bar
            reached[0] = steps.index(step) + 1 if step in steps else reached[0]
            progress.update(f"{offer['node']}/{offer['shape']}: {step}", reached[0] / len(steps))

        session = events.pump(self.manager.launch(
            offer["provider_url"], offer["shape"], image=image, max_seconds=max_seconds,
            budget_mist=budget, on_progress=lambda step: events.emit("progress", step),
            requirements=requirements, folder=folder,
            idle_stop_minutes=getattr(self, "_idle_stop", None)), handle)
        progress.close(f"session {session.id} running on {session.node} "
                       f"({session.shape}, budget {session.budget_mist:,} MIST)")
        declared = next((i.get("packages") for i in offer.get("image_details") or []
                         if i.get("name") == image), None)
        skip = drift.required_names(requirements)  # installed at the versions asked for
        for line in drift.launch_warnings(image, declared, drift.imported_packages(), skip):
            print(f"walnut: warning: {line}", file=sys.stderr)  # imported here, other versions
        return session

    def _cmd_launch(self, args, cell) -> None:
        requirements = self._requirements(args)  # a bad file: one line, nothing launched
        self._idle_stop = args.idle_stop  # issue #17: checked by the launch, before paying
        try:
            self._launch(args.offer, args.budget, args.max_seconds, args.image, requirements,
                         folder=args.folder)
        except WalnutError as exc:
            if "\n" in exc.message:  # pip's own error text, whole, above the one line
                print(exc.message, file=sys.stderr)
            raise
        finally:
            self._idle_stop = None  # a later %%walnut run --offer takes the default

    def _cmd_idle(self, args, cell) -> None:
        s = self._running_session(args.session, "idle")
        s = loop.run(self.manager.set_idle_stop(s.id, args.minutes))  # or one line
        threshold = int(s.extra.get("idle_stop_s") or 0)
        print(f"session {s.id}: " + (f"stops after {threshold / 60:g} min idle" if threshold
                                     else "never stops when idle"))

    def _cmd_away(self, args, cell) -> None:
        s = self._running_session(args.session, "away")
        if args.budget == "off":
            loop.run(self.manager.set_away(s.id))  # or one line
            print(f"session {s.id}: away mode off; it stops if this server stops paying")
            return
        s = loop.run(self.manager.set_away(s.id, args.budget, int(args.hours * 3600)))
        print(f"session {s.id}: runs on while you are away, for {args.hours:g} h. "
              + trust_bound(s.away_budget_mist))

    def _requirements(self, args) -> str | None:
        if args.requirements:
            return read_requirements_file(args.requirements)
        if args.requirements_from_notebook is None:
            return None
        path = args.requirements_from_notebook or os.environ.get("JPY_SESSION_NAME", "")
        if path.endswith(".ipynb") and (args.requirements_from_notebook or os.path.isfile(path)):
            text = requirements_from_notebook(path)
        else:  # no notebook file known to this kernel: the cells it has run
            history = (self.shell.user_ns.get("In") if self.shell is not None else None) or []
            text = requirements_from_sources([str(c) for c in history])
        print("walnut: requirements from the notebook's imports:\n" + (text or "(none)\n"),
              end="")
        return text

    def _cmd_sessions(self, args, cell) -> Table:
        manager = self.manager
        if not args.all:
            loop.run(manager.refresh())
        sessions = manager.store.list(statuses=None if args.all else ACTIVE)
        self._print_warnings(sessions, only_new=False)
        return Table(["id", "provider", "shape", "status", "running", "cost MIST",
                      "budget MIST", "reason"], [
            [s.id, s.node, s.shape, s.status, f"{s.running_seconds} s", mist(s.cost_mist),
             mist(s.budget_mist), s.reason] for s in sessions],
            title=f"{len(sessions)} session(s)")

    def _print_warnings(self, sessions, only_new: bool) -> None:
        """A line for each warning before a session's end (renter/warnings.py, issue #16);
        before a remote cell, only those not shown yet."""
        shown = self.__dict__.setdefault("_warned", set())
        for s in sessions:
            for w in self.manager.warnings(s):
                if only_new and (s.id, w["kind"]) in shown:
                    continue
                shown.add((s.id, w["kind"]))
                print(f"walnut: session {s.id}: {w['message']}", file=sys.stderr)

    def _cmd_stop(self, args, cell) -> None:
        manager = self.manager
        if args.all:
            ids = [s.id for s in manager.store.list(statuses=ACTIVE)]
        elif args.session_id:
            ids = [args.session_id]
        else:
            raise UsageError("walnut stop: give a SESSION_ID or --all")
        for sid in ids:
            kernel = self._kernels.pop(sid, None)
            if kernel is not None:
                loop.run(kernel.shutdown())
            s = loop.run(manager.stop(sid))
            print(f"session {s.id} {s.status}: ran {s.running_seconds} s, "
                  f"cost {s.cost_mist:,} MIST")
        if not ids:
            print("no running sessions")

    def _cmd_balance(self, args, cell) -> Table:
        manager = self.manager
        address = manager.key.address
        rows = [["wallet", address]]
        path = default_ledger_path()
        if path.exists():
            ledger = LocalLedger(path)
            try:
                bal = ledger.balance(address)
            finally:
                getattr(ledger, "close", lambda: None)()
            rows.append(["ledger balance", f"{format_sui(bal)} ({bal:,} MIST)"])
        else:
            rows.append(["ledger balance", f"no local ledger at {path}"])
        active = manager.store.list(statuses=ACTIVE)
        rows.append(["running sessions", str(len(active))])
        rows.append(["their cost so far", f"{sum(s.cost_mist for s in active):,} MIST"])
        rows.append(["their remaining budget", f"{sum(s.remaining_mist for s in active):,} MIST"])
        return Table(["", ""], rows, title="Walnut balance")

    # --- %%walnut run ---------------------------------------------------------------------

    def _session_for_run(self, args):
        if args.offer:
            return self._launch(args.offer, args.budget, None)
        return self._running_session(args.session, "run", " or use --offer")

    def _running_session(self, session_id: str | None, command: str, hint: str = ""):
        manager = self.manager
        if session_id:
            s = manager.get(session_id)
            if s.status not in ACTIVE:
                raise UsageError(f"walnut {command}: session {s.id} is {s.status} "
                                 f"({s.reason})")
            return s
        running = manager.store.list(statuses=("running",))
        if len(running) == 1:
            return running[0]
        if not running:
            raise UsageError(f"walnut {command}: no running session; `%walnut launch` one"
                             + hint)
        raise UsageError(f"walnut {command}: {len(running)} sessions run; pick one with "
                         "--session")

    # --- %walnut push / pull ----------------------------------------------------------------

    def _workspace(self, args, command: str) -> WorkspaceClient:
        session = self._running_session(args.session, command)
        return WorkspaceClient(self.manager.client(session.provider_url), session.id,
                               session.access_token, max_bytes=self.max_push_mb * 2**20)

    def _cmd_push(self, args, cell) -> None:
        client = self._workspace(args, "push")
        self._transfer(lambda progress: client.push(args.path, args.dest, progress=progress))

    def _cmd_pull(self, args, cell) -> None:
        client = self._workspace(args, "pull")
        self._transfer(lambda progress: client.pull(args.path, args.dest, progress=progress))

    def _transfer(self, start: Callable[[Callable], Coroutine]) -> TransferResult:
        """Run a push or pull with a progress bar; its one-line summary after it."""
        bar = Progress(self.shell)
        events = Events()
        last = [0.0]

        def seen(p) -> None:  # on the private loop: at most ten updates a second
            now = time.monotonic()
            if now - last[0] >= 0.1 or p.done == p.total:
                last[0] = now
                events.emit("progress", p)

        def show(kind: str, p) -> None:
            bar.update(f"file {p.file} of {p.files} ({p.path}): {human_bytes(p.done)} of "
                       f"{human_bytes(p.total)}", p.done / p.total if p.total else 1.0)

        try:
            result = events.pump(start(seen), show)
        finally:
            bar.close()
        print(f"walnut: {result.summary()}")
        return result

    async def _kernel_for(self, session):
        kernel = self._kernels.get(session.id)
        if kernel is not None and kernel.connected:
            return kernel
        client = self.manager.client(session.provider_url)
        if kernel is None:  # through the provider client: its pinned TLS, its proxy
            kernel = RemoteKernel(client.session_gateway(session.id, session.access_token),
                                  timeout=self.kernel_timeout)
            await kernel.start()
            await transfer.setup(kernel)
        else:  # reconnect to the same kernel: its variables are still there
            await kernel.connect()
        self._kernels[session.id] = kernel
        return kernel

    def _cmd_run(self, args, cell: str) -> None:
        push, pull = _csv(args.push), _csv(args.pull)
        ns = self.shell.user_ns
        missing = [n for n in push if n not in ns]
        if missing:
            raise UsageError(f"walnut run: cannot push {missing[0]!r}: not defined here")
        session = self._session_for_run(args)
        self._print_warnings([session], only_new=True)
        serializer = args.serializer or self.serializer
        if pull and serializer != "data":
            print(transfer.unsafe_pull_warning(serializer), file=sys.stderr)
        limit = self.max_transfer_mb * 1_000_000
        events = Events()
        timings: dict[str, float] = {}
        pulled: dict[str, Any] = {}

        async def work():
            t0 = time.perf_counter()
            kernel = await self._kernel_for(session)
            timings["connect_s"] = time.perf_counter() - t0
            for line in await drift.check_transfer(  # version drift of pickled pushes
                    kernel, [ns[n] for n in push if _pickled_push(ns[n], serializer)]):
                events.emit("warning", line)
            t = time.perf_counter()
            moved = 0
            for name in push:
                moved += await transfer.push(kernel, name, ns[name], serializer, limit)
            timings.update(push_s=time.perf_counter() - t, push_bytes=moved)
            t = time.perf_counter()
            result = await kernel.execute(cell, on_output=lambda m: events.emit("output", m),
                                          timeout=args.timeout)
            timings["execute_s"] = time.perf_counter() - t
            if result.status == "error":
                return result
            t, moved = time.perf_counter(), 0
            for name in pull:
                pulled[name], size = await transfer.pull(kernel, name, serializer, limit)
                moved += size
            timings.update(pull_s=time.perf_counter() - t, pull_bytes=moved,
                           total_s=time.perf_counter() - t0)
            if serializer != "data":  # only pickled pulls depend on matching versions
                for line in await drift.check_transfer(kernel, pulled.values()):
                    events.emit("warning", line)
            return result

        def interrupt() -> None:
            kernel = self._kernels.get(session.id)
            if kernel is not None:
                loop.submit(kernel.interrupt())

        try:
            result = events.pump(work(), lambda kind, m: print(m, file=sys.stderr)
                                 if kind == "warning" else _show_output(m), interrupt)
        except Exception as exc:
            if isinstance(exc, KernelError):
                self._kernels.pop(session.id, None)
            raise
        self.last_run = timings
        if result.status == "error":
            raise remote_error(result.error or {})
        ns.update(pulled)
        if args.verbose:
            print(_timings_line(timings), file=sys.stderr)

    # --- jobs and sweeps ------------------------------------------------------------------

    def _cmd_job(self, args, cell) -> Any:
        return run_job_command(args, self._job_manager(), ui=_MagicUI(self.shell),
                               listed=self._listed)

    def _cmd_sweep(self, args, cell) -> Any:
        return run_sweep_command(args, self._job_manager(), ui=_MagicUI(self.shell),
                                 listed=self._listed)

    def _job_manager(self):
        return JobManager(self.manager)


class _MagicUI:
    """What job commands need from their surroundings: progress and blocking runs."""

    def __init__(self, shell) -> None:
        self.shell = shell

    def run(self, coro_factory: Callable[[Callable[[str], None]], Coroutine]) -> Any:
        progress = Progress(self.shell)
        events = Events()
        result = events.pump(coro_factory(lambda text: events.emit("p", text)),
                             lambda kind, text: progress.update(*_split_frac(text)))
        progress.close()
        return result


def _images_cell(offer: dict) -> str:
    """The offer's images with their key versions; only the matching ones when filtered."""
    shown = offer.get("matching_images")
    return ", ".join(image_label(i) for i in offer.get("image_details") or []
                     if shown is None or i.get("name") in shown)


def _pickled_push(value: Any, serializer: str) -> bool:
    """Whether a push of `value` travels as a pickle: any push with a pickle serializer; with
    `data`, a value of anything but NumPy/pandas types (data, or plain values: no pickle)."""
    return serializer != "data" or bool(drift.value_packages(value) - DATA_PACKAGES)


DATA_PACKAGES = {"numpy", "pandas", "pyarrow"}  # what the data format carries without pickling


def _split_frac(text: str) -> tuple[str, float | None]:
    """Progress texts may start with 'k/n ' to drive the bar."""
    head, _, rest = text.partition(" ")
    k, sep, n = head.partition("/")
    if sep and k.isdigit() and n.isdigit() and int(n):
        return rest, int(k) / int(n)
    return text, None


def _show_output(m: dict) -> None:
    """Re-display a remote kernel's output here, made inert first: the renter's JupyterLab
    trusts what this local kernel publishes (the same policy as the kernel bridge)."""
    kind = m["header"]["msg_type"]
    content = sanitize(kind, m["content"])
    if kind == "stream":
        stream = sys.stdout if content["name"] == "stdout" else sys.stderr
        stream.write(content["text"])
        stream.flush()
    elif kind in ("display_data", "execute_result"):
        transient = content.get("transient") or {}
        publish_display_data(content["data"], content.get("metadata") or {},
                             transient=transient or None)
    elif kind == "update_display_data":
        publish_display_data(content["data"], content.get("metadata") or {},
                             transient=content.get("transient"), update=True)
    elif kind == "clear_output":
        clear_output(wait=content.get("wait", False))


def _timings_line(t: dict[str, float]) -> str:
    parts = [f"total {t.get('total_s', 0) * 1000:.1f} ms",
             f"execute {t.get('execute_s', 0) * 1000:.1f} ms"]
    if t.get("push_bytes"):
        parts.append(f"push {t['push_bytes'] / 1e6:.1f} MB in {t['push_s'] * 1000:.0f} ms")
    if t.get("pull_bytes"):
        parts.append(f"pull {t['pull_bytes'] / 1e6:.1f} MB in {t['pull_s'] * 1000:.0f} ms")
    return "walnut: " + ", ".join(parts)


def _one_line(exc: BaseException) -> str:
    # a WalnutError's message is written for the user (no ledger code, no HTTP status)
    raw = (exc.message if isinstance(exc, WalnutError) else str(exc)).strip()
    text = raw.splitlines()[0] if raw else type(exc).__name__
    return f"walnut: {text}"


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(WalnutMagics(shell=ipython))


def unload_ipython_extension(ipython) -> None:
    """Close remote kernels this extension started; their sessions keep running."""
    magics = ipython.magics_manager.registry.get("WalnutMagics")
    if magics is not None:
        for kernel in list(magics._kernels.values()):
            try:
                loop.run(kernel.shutdown(), timeout=10)
            except Exception:
                pass
        magics._kernels.clear()
