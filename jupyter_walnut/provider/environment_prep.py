"""Requirements at launch (issue #15, contract C4): the provider installs a renter's
requirements into the session's own environment (`$HOME/.walnut/env`) after its gateway is
ready and before the session turns `running`, with pip's progress in the session's status
(`environment`), pip's own text when it fails, and a cache of prepared environments.

The cache is keyed by (renter address, image, requirements hash) and never shared between
renters: an install can run code the renter chose (an sdist's build), so what it leaves in
the environment is only ever given back to that renter. Entries are tars of the session env
under the node's state directory, bounded in total size, least recently used evicted first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections import deque
from pathlib import Path

from ..common.requirements import Requirements
from .runtimes import Runtime, RuntimeHandle
from .session_request import SessionError
from .store import SessionRecord, SessionStore

log = logging.getLogger("walnut.provider")

STATES = ("none", "resolving", "downloading", "installing", "ready", "cached", "failed")
IN_PROGRESS = ("resolving", "downloading", "installing")
REQUIREMENTS_FILE = "/tmp/walnut-requirements.txt"
MAX_ERROR_CHARS = 8000
MAX_REASON_CHARS = 1500
# the install runs in the session's own env; the requirements reach it as a variable (no
# file of the provider's is shared with the session)
INSTALL_SCRIPT = (
    'umask 022; printf "%s" "$WALNUT_REQUIREMENTS" > ' + REQUIREMENTS_FILE + ' && '
    'exec "${WALNUT_SESSION_ENV:-$HOME/.walnut/env}/bin/python" -m pip install '
    '--progress-bar off --disable-pip-version-check --no-input -r ' + REQUIREMENTS_FILE)


def no_environment() -> dict:
    """The `environment` of a session launched without requirements."""
    return {"state": "none", "step": "", "done": 0, "total": None, "requirements_hash": None,
            "error": None}


class InstallError(SessionError):
    """The requirements could not be installed; the message is the session's reason."""

    def __init__(self, message: str) -> None:
        super().__init__(422, message)


class PipProgress:
    """pip's output, line by line, as an `environment` state: resolving (Collecting ...),
    downloading, installing N of M, and the lines that say why it failed."""

    _INSTALLING = re.compile(r"^Installing collected packages:\s*(.*)$")

    def __init__(self, requirements_hash: str) -> None:
        self.env = {**no_environment(), "state": "resolving", "step": "resolving requirements",
                    "requirements_hash": requirements_hash}
        self.tail: deque[str] = deque(maxlen=60)
        self.errors: list[str] = []
        self._collected = 0
        self._downloaded = 0

    def feed(self, line: str) -> bool:
        """Take one line; True when the state changed."""
        text = line.strip()
        if not text:
            return False
        self.tail.append(text)
        before = dict(self.env)
        if text.startswith("ERROR:"):
            self.errors.append(text)
        elif text.startswith("Collecting ") or text.startswith("Requirement already satisfied:"):
            self._collected += 1
            name = text.split(":", 1)[1] if text.startswith("Requirement") else text[11:]
            self.env.update(state="resolving", step=f"resolving {name.split()[0]}",
                            done=self._collected, total=None)
        elif text.startswith(("Downloading ", "Using cached ")):
            self._downloaded += 1
            name = text.split()[2 if text.startswith("Using") else 1].rsplit("/", 1)[-1]
            self.env.update(state="downloading", step=f"downloading {name}",
                            done=self._downloaded, total=max(self._collected, self._downloaded))
        elif m := self._INSTALLING.match(text):
            names = [n.strip() for n in m.group(1).split(",") if n.strip()]
            self.env.update(state="installing", step="installing " + ", ".join(names)[:300],
                            done=0, total=len(names))
        elif text.startswith("Successfully installed"):
            total = self.env["total"] or len(text.split()) - 2
            self.env.update(state="installing", step="installed", done=total, total=total)
        return self.env != before

    def error_text(self) -> str:
        return "\n".join(self.tail)[-MAX_ERROR_CHARS:]

    def reason(self, code: int) -> str:
        """The session's reason: pip's ERROR lines, else its last lines."""
        lines = self.errors or list(self.tail)[-5:] or [f"pip exited with code {code}"]
        return ("installing requirements failed: " + " | ".join(lines))[:MAX_REASON_CHARS]


class PreparedEnvironments:
    """Tars of prepared session envs by key, at most `max_bytes` in all (LRU eviction)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    @staticmethod
    def key(renter: str, image: str, requirements_hash: str) -> str:
        return hashlib.sha256(json.dumps([renter, image, requirements_hash]).encode()
                              ).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.tar"

    def get(self, key: str) -> Path | None:
        path = self._path(key)
        try:
            os.utime(path)  # the recency LRU eviction goes by
        except FileNotFoundError:
            return None
        return path

    def new_file(self, key: str) -> Path:
        """Where to write an entry before `put` makes it visible."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.root / f".{key}.{os.getpid()}.{time.monotonic_ns()}.partial"

    def put(self, key: str, written: Path) -> bool:
        """Keep a written entry (False and gone when it alone is over the bound)."""
        if written.stat().st_size > self.max_bytes:
            written.unlink(missing_ok=True)
            return False
        written.replace(self._path(key))
        self._evict()
        return True

    def _evict(self) -> None:
        entries = []
        for path in self.root.glob("*.tar"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            log.info("prepared environment %s evicted (cache over %d bytes)", path.stem,
                     self.max_bytes)

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.tar"))


class EnvironmentPrep:
    """Installs a session's requirements, or puts its renter's prepared env back."""

    def __init__(self, runtime: Runtime, store: SessionStore, cache: PreparedEnvironments,
                 timeout_s: float) -> None:
        self.runtime = runtime
        self.store = store
        self.cache = cache
        self.timeout_s = timeout_s

    def _set(self, session_id: str, env: dict) -> None:
        rec = self.store.get(session_id)
        if rec is not None:
            self.store.update(session_id, extra={**rec.extra, "environment": dict(env)})

    async def prepare(self, rec: SessionRecord, handle: RuntimeHandle, image: str,
                      requirements: Requirements) -> None:
        """Install `requirements` in the session env; InstallError when pip fails."""
        key = self.cache.key(rec.renter, image, requirements.hash)
        cached = self.cache.get(key)
        if cached is not None:
            await self.runtime.restore_env(handle, cached)
            self._set(rec.id, {**no_environment(), "state": "cached",
                               "step": "prepared environment restored",
                               "done": len(requirements.lines),
                               "total": len(requirements.lines),
                               "requirements_hash": requirements.hash})
            log.info("session %s: prepared environment %s restored", rec.id, key[:12])
            return
        progress = PipProgress(requirements.hash)
        self._set(rec.id, progress.env)

        def on_line(line: str) -> None:
            if progress.feed(line):
                self._set(rec.id, progress.env)

        try:
            code = await asyncio.wait_for(self.runtime.exec(
                handle, ["sh", "-c", INSTALL_SCRIPT], {"WALNUT_REQUIREMENTS": requirements.text},
                on_line), self.timeout_s)
        except TimeoutError:
            self._fail(rec.id, progress, f"pip did not finish within {self.timeout_s:.0f} s")
            raise InstallError(f"installing requirements failed: pip did not finish within "
                               f"{self.timeout_s:.0f} s") from None
        if code != 0:
            self._fail(rec.id, progress, progress.error_text() or f"pip exited with {code}")
            raise InstallError(progress.reason(code))
        await self._save(rec.id, key, handle)
        self._set(rec.id, {**progress.env, "state": "ready", "step": "installed",
                           "done": progress.env["total"] or progress.env["done"],
                           "total": progress.env["total"] or progress.env["done"]})

    async def _save(self, session_id: str, key: str, handle: RuntimeHandle) -> None:
        """Keep the prepared env for the renter's next launch; a failure only costs that."""
        written = self.cache.new_file(key)
        try:
            await self.runtime.save_env(handle, written)
            kept = self.cache.put(key, written)
            log.info("session %s: prepared environment %s %s", session_id, key[:12],
                     "kept" if kept else "over the cache's size, not kept")
        except Exception as exc:
            log.warning("session %s: prepared environment not kept: %s", session_id, exc)
        finally:
            written.unlink(missing_ok=True)

    def _fail(self, session_id: str, progress: PipProgress, error: str) -> None:
        self._set(session_id, {**progress.env, "state": "failed", "step": "install failed",
                               "error": error[-MAX_ERROR_CHARS:]})

    def pending(self, session_id: str, requirements: Requirements) -> None:
        """A session admitted with requirements: they install once its gateway is ready."""
        self._set(session_id, {**no_environment(), "state": "resolving",
                               "step": "waiting for the session to start",
                               "requirements_hash": requirements.hash})

    def interrupted(self, session_id: str, why: str) -> None:
        """An install cut short (the provider shut down or restarted): failed, saying why."""
        rec = self.store.get(session_id)
        env = (rec.extra.get("environment") if rec is not None else None) or {}
        if env.get("state") in IN_PROGRESS:
            self._set(session_id, {**env, "state": "failed", "step": "install interrupted",
                                   "error": why})
