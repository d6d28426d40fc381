"""The node's package cache: a devpi-server that every session installs packages from.

The node runs devpi-server as a child process (its server directory under the node's state
directory, listening on a 0600 Unix socket there only, a random root password kept in a 0600
file, and
`--restrict-modify root`, so a client without root's password can create no user or index,
upload nothing and change no index's settings). Its `root/pypi` mirror fetches from
`[packages] upstream_url` (devpi's own default when empty) and checks each file it fetches
against the hash the upstream's simple page gives; what it fetched once it serves from disk.

The node's own relay (runtimes/relay.py) serves it on 127.0.0.1 at the cache's port, bound at
once when the node starts (devpi itself takes seconds: no other program can take the port in
between). Sessions find it through `session_env`: `PIP_INDEX_URL` (a Docker session reaches it
through a relay of its own on its bridge, a process session on loopback), and
`WALNUT_EGRESS`, the node's egress policy. The cache is the node's, so it fetches even when
sessions are `offline`. Without devpi-server, or when it fails to start, the node logs one line
and sessions run without an index of the node's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import functools
import importlib.util
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .runtimes.relay import PACKAGE_HOST, TcpRelay

log = logging.getLogger("walnut.provider")

INDEX = "root/pypi"  # devpi's mirror index
UPSTREAM_TIMEOUT_S = 60  # how long devpi waits for its upstream (pip's own is 15 s per read)
# devpi derives its signing key with argon2 at every start: 7-12 s on an idle 2-core machine,
# over a minute on a loaded one
START_TIMEOUT_S = 300.0
_FILE_GET = re.compile(r"\] GET /root/pypi/\+f/")
_UPSTREAM_FETCH = re.compile(r"reading remote: ")
_PR_SET_PDEATHSIG = 1


def devpi_installed() -> bool:
    return importlib.util.find_spec("devpi_server") is not None


def _die_with_parent() -> None:
    """devpi exits when the node's process does (SIGTERM from the kernel on our exit)."""
    os.setsid()  # a Ctrl-C to the provider's terminal is the node's to handle
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class PackageCache:
    """devpi-server as the node's child; `start` returns whether it serves."""

    def __init__(self, directory: Path, *, runtime: str, egress: str, upstream_url: str = "",
                 port: int = 0, python: str = sys.executable) -> None:
        self.directory = Path(directory)
        self.runtime = runtime
        self.egress = egress
        self.upstream_url = upstream_url
        self.python = python
        self._port = port
        self.port: int | None = None
        self.state = "stopped"  # stopped | starting | ready | failed
        self.reason = ""
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # how long the last start took
        self._relay: TcpRelay | None = None  # 127.0.0.1:port -> devpi's socket
        self._ready = asyncio.Event()

    # --- files ----------------------------------------------------------------------------

    @property
    def serverdir(self) -> Path:
        return self.directory / "server"

    @property
    def log_path(self) -> Path:
        return self.directory / "devpi.log"

    @functools.cached_property
    def socket_path(self) -> str:
        """devpi's Unix socket: what every relay joins (in a private temporary directory when
        the state directory's path is too long for a socket address)."""
        path = self.directory / "devpi.sock"
        if len(str(path)) < 100:
            return str(path)
        return str(Path(tempfile.mkdtemp(prefix="walnut-devpi-")) / "devpi.sock")

    @property
    def url(self) -> str:
        """The cache's root on the provider's host (loopback)."""
        return f"http://127.0.0.1:{self.port}"

    def _password(self) -> str:
        path = self.directory / "root-password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    async def _listen(self) -> int:
        """The loopback relay on the configured port, else on the one chosen before (sessions
        adopted after a restart have it in their environment), else on a free one, kept."""
        path = self.directory / "port"
        wanted = [self._port] if self._port else []
        if not self._port:
            with contextlib.suppress(OSError, ValueError):
                wanted.append(int(path.read_text()))
            wanted.append(0)
        relay = TcpRelay(self.socket_path)
        for i, port in enumerate(wanted):
            try:
                bound = await relay.start("127.0.0.1", port)
            except OSError as exc:
                if i == len(wanted) - 1:
                    raise RuntimeError(f"cannot listen on 127.0.0.1:{port}: {exc}") from exc
                continue
            self._relay = relay
            if not self._port:
                path.write_text(str(bound))
            return bound
        raise AssertionError("unreachable")

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPISERVER_")}
        return {**env, **extra}

    def _kill_leftover(self) -> None:
        """A devpi a crashed node left behind holds the server directory: end it."""
        pidfile = self.directory / "devpi.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(self.serverdir).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
        Path(self.socket_path).unlink(missing_ok=True)

    # --- lifecycle ------------------------------------------------------------------------

    async def prepare(self) -> int | None:
        """Listen at the port sessions will reach the cache at, before it serves (a restarted
        node's adopted sessions need it at once); None when the cache cannot run."""
        if self.port is not None:
            return self.port
        if not devpi_installed():
            self._failed("devpi-server is not installed (pip install "
                         "'jupyter-walnut[provider]')")
            return None
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._kill_leftover()
            self.port = await self._listen()
        except (OSError, RuntimeError) as exc:
            self._failed(str(exc))
            return None
        self.state = "starting"
        return self.port

    def _failed(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        log.warning("package cache: not started (%s); sessions run without the node's "
                    "package index", reason)
        self._ready.set()

    async def start(self) -> bool:
        """Start devpi-server and point its mirror at the upstream; False (and one log line)
        when it cannot serve."""
        began = time.monotonic()
        if self.state == "failed" or await self.prepare() is None:
            return False
        try:
            password = self._password()
            if not (self.serverdir / ".serverversion").exists():
                await self._init(password)
            self._spawn()
            await self._wait_serving()
            if self.upstream_url:
                await self._set_upstream(password)
        except Exception as exc:
            await self.stop()
            self._failed(str(exc))
            return False
        self.start_seconds = time.monotonic() - began
        self.state = "ready"
        self._ready.set()
        log.info("package cache: devpi-server on %s (upstream %s), ready in %.1f s", self.url,
                 self.upstream_url or "devpi's default", self.start_seconds)
        return True

    async def _init(self, password: str) -> None:
        done = await asyncio.to_thread(
            subprocess.run,
            [self.python, "-c", "from devpi_server.init import init; init()",
             "--serverdir", str(self.serverdir)],
            env=self._env(DEVPISERVER_ROOT_PASSWD=password),  # not on a command line
            capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"devpi-init failed: {tail[-1] if tail else done.returncode}")

    def _spawn(self) -> None:
        secret = self.directory / "secret"
        if not secret.exists():
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(32)).decode())
        out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", "devpi_server", "--serverdir", str(self.serverdir),
                 "--unix-socket", self.socket_path, "--unix-socket-perms", "600",
                 "--restrict-modify", "root", "--secretfile", str(secret),
                 # devpi's 5 s default for an upstream answer fails installs (502, or a
                 # project with no versions) on a slow link or a busy upstream
                 "--request-timeout", str(UPSTREAM_TIMEOUT_S)],
                env=self._env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent, close_fds=True)
        finally:
            out.close()
        (self.directory / "devpi.pid").write_text(str(self.proc.pid))

    async def _wait_serving(self) -> None:
        client = AsyncHTTPClient()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"devpi-server exited with code {self.proc.returncode}: "
                                   f"{self._log_tail()}")
            try:
                await client.fetch(HTTPRequest(self.url + "/+api", request_timeout=5))
                return
            except (HTTPClientError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"devpi-server not serving after {START_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)  # polling a child process, bounded by the deadline

    async def _set_upstream(self, password: str) -> None:
        auth = base64.b64encode(f"root:{password}".encode()).decode()
        client = AsyncHTTPClient()
        headers = {"Accept": "application/json", "Content-Type": "application/json",
                   "X-Devpi-Auth": auth}
        try:
            await client.fetch(HTTPRequest(
                f"{self.url}/{INDEX}", method="PATCH", headers=headers, request_timeout=60,
                body=json.dumps([f"mirror_url={self.upstream_url}"])))
        except HTTPClientError as exc:
            body = exc.response.body.decode(errors="replace")[:200] if exc.response else ""
            raise RuntimeError(f"devpi refused the upstream URL: {exc.code} {body}") from exc

    def _log_tail(self, lines: int = 3) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "no output"

    async def wait_ready(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Whether the cache serves, once its start has finished (at most `timeout`)."""
        if self.state == "stopped":
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.state == "ready"

    async def stop(self) -> None:
        """End devpi-server and the loopback relay (the port is free again)."""
        if self._relay is not None:
            relay, self._relay = self._relay, None
            await relay.close()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 15)
        with contextlib.suppress(OSError):
            (self.directory / "devpi.pid").unlink(missing_ok=True)
            Path(self.socket_path).unlink(missing_ok=True)
            if Path(self.socket_path).parent != self.directory:  # the temporary one
                Path(self.socket_path).parent.rmdir()
        self.state = "stopped"

    # --- what sessions and the operator see ---------------------------------------------

    def session_env(self, session_id: str) -> dict[str, str]:
        """The variables a session gets: the index URL while the cache serves (none on
        Slurm, whose sessions run on other machines), and the node's egress policy."""
        env = {"WALNUT_EGRESS": self.egress}
        if self.state not in ("starting", "ready") or self.port is None or \
                self.runtime not in ("docker", "process"):
            return env
        host = PACKAGE_HOST if self.runtime == "docker" else "127.0.0.1"
        url = f"http://{host}:{self.port}/{INDEX}/+simple/"
        return {**env, "PIP_INDEX_URL": url, "PIP_TRUSTED_HOST": host,
                "WALNUT_PACKAGE_INDEX": url}

    def stats(self) -> dict[str, int]:
        """devpi's own evidence, from its request log: files it served and files it had to
        fetch from upstream (a served file not fetched came from the cache)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return {"file_requests": 0, "upstream_fetches": 0, "hits": 0}
        served = len(_FILE_GET.findall(text))
        fetched = len(_UPSTREAM_FETCH.findall(text))
        return {"file_requests": served, "upstream_fetches": fetched,
                "hits": max(0, served - fetched)}
