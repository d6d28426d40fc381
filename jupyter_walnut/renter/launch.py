"""A session launch as a visible pipeline: named steps run in order, each reported through
one `on_step(step, state, detail)` callback and stored with the session, so that the
sidebar shows the step really running (or the one that failed, and why) instead of
guessing it from the session's status.

The step bodies are the manager's (renter/manager.py); this module only orders, reports
and records them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from ..common.sqlite_store import StorageError
from .store import RenterStore

log = logging.getLogger("walnut.renter")

# price and budget from the provider's live status; the payment channel on the ledger; the
# provider's session record; the requirements installed in it (issue #15, only when some
# were given); its container running; the hardware check (issue #9); a local folder sent
# to the workspace (issue #16, only when one was given); the kernelspec JupyterLab lists
STEPS = ("quote", "open_channel", "create_session", "environment", "await_running", "verify",
         "workspace", "kernelspec")
STARTED, DONE, FAILED = "started", "done", "failed"

OnStep = Callable[[str, str, str], None]
# a step's body; what it returns is the detail of its "done" report
StepBody = Callable[[], Awaitable[str | None]]

# the one-line progress the magics and older callers of `launch(on_progress=)` show
PROGRESS_LINES = {"quote": "contacting provider", "open_channel": "opening payment channel",
                  "create_session": "starting session container",
                  "environment": "preparing the environment",
                  "verify": "verifying the hardware",
                  "workspace": "sending the folder"}
READY = "ready"


def environment_detail(env: dict | None) -> str:
    """A provider's `environment` report (contract C4) in words: "installing 3 of 7:
    pandas", "environment ready from cache", or pip's error. One line but for the error;
    the texts come from the provider, so they are cut to a bounded length."""
    if not isinstance(env, dict):
        return ""
    state = str(env.get("state") or "none")
    step = " ".join(str(env.get("step") or "").split())[:200]
    if state == "cached":
        return "environment ready from cache"
    if state == "ready":
        return "environment ready"
    if state == "failed":
        error = str(env.get("error") or step or "no error text from the provider")
        return f"installing requirements failed: {error[-4000:]}"
    if state == "none":
        return ""
    done, total = env.get("done"), env.get("total")
    count = f" {done} of {total}" if isinstance(done, int) and isinstance(total, int) \
        and total > 0 else ""
    return f"{state}{count}" + (f": {step}" if step else "")


def error_detail(exc: BaseException) -> str:
    """The failure as the user reads it: a Walnut error's message, else the exception."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message)[:8000]  # room for pip's error text (issue #15)


async def run_steps(steps: Sequence[tuple[str, StepBody]], on_step: OnStep) -> None:
    """Run the steps in order; each reports started, then done, or failed with the error's
    message (re-raised: the step's own cleanup has run by then, and no later step starts)."""
    for name, body in steps:
        if name not in STEPS:
            raise ValueError(f"unknown launch step {name!r}")
        on_step(name, STARTED, "")
        try:
            detail = await body()
        except BaseException as exc:  # a cancelled launch is a failed step too
            on_step(name, FAILED, error_detail(exc))
            raise
        on_step(name, DONE, detail or "")


class StepLog:
    """The steps of one launch in the renter store. The first ones run before the provider
    names the session, so they wait here until `attach` gives them a session row."""

    def __init__(self, store: RenterStore) -> None:
        self.store = store
        self.session_id: str | None = None
        self._pending: list[tuple[str, str, str, float]] = []

    def __call__(self, step: str, state: str, detail: str) -> None:
        self._pending.append((step, state, detail, time.time()))
        if self.session_id is not None:
            self._flush()

    def attach(self, session_id: str) -> None:
        self.session_id = session_id
        self._flush()

    def _flush(self) -> None:
        try:
            while self._pending:
                self.store.save_launch_step(self.session_id, *self._pending[0])
                self._pending.pop(0)
        except StorageError as exc:
            # the steps only inform: a full disk must not change the launch or its cleanup
            log.warning("launch steps of %s not stored: %s", self.session_id, exc.message)


def progress_reporter(on_progress: Callable[[str], None]) -> OnStep:
    """An `on_step` that feeds a one-line progress callback (the magics' progress bar)."""

    def report(step: str, state: str, detail: str) -> None:
        if step in ("environment", "workspace") and detail and state != FAILED:
            # the provider's install, live: "installing 3 of 7: pandas", "ready from cache"
            on_progress(f"{step}: {detail}")
        elif state == STARTED and step in PROGRESS_LINES:
            on_progress(PROGRESS_LINES[step])
        elif state == DONE and step == STEPS[-1]:
            on_progress(READY)

    return report


def fan_out(*callbacks: OnStep | None) -> OnStep:
    """One `on_step` calling each of several in turn; a failing observer is logged and
    never fails the launch."""
    chosen = [c for c in callbacks if c is not None]

    def report(step: str, state: str, detail: str) -> None:
        for callback in chosen:
            try:
                callback(step, state, detail)
            except Exception:
                log.exception("launch step observer failed")

    return report
