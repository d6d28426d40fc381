"""A real Walnut stack for browser tests: a local provider (Docker runtime, TLS), the local
ledger, and JupyterLab with the jupyter_walnut server extension, on random loopback ports.

Usage (also handy by hand: `python -m tests.ui_helpers` keeps one running):

    with WalnutStack(tmp_dir) as stack:
        stack.lab_url  # includes the token
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
# the default stack: Docker sessions behind TLS; WALNUT_TEST_RUNTIME=process is the cheap leg
RUNTIME = os.environ.get("WALNUT_TEST_RUNTIME", "docker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2, proc=None):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not ready yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last_error})")


def http_json(url: str, method: str = "GET", body: dict | None = None, token: str | None = None,
              timeout: float = 30):
    context = None
    if url.startswith("https:"):  # readiness probes of our own test node only
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:  # the server's own message, for the report
        raise AssertionError(f"{method} {url}: HTTP {exc.code}: "
                             f"{exc.read().decode(errors='replace')[:500]}") from exc


class WalnutStack:
    def __init__(self, root: Path, token: str = "walnut-e2e-token", provider_url: str = "",
                 lab_args: tuple[str, ...] = ()) -> None:
        """`provider_url`: use that node (e.g. a tests/stack.py StackNode sharing
        root/ledger.sqlite) instead of starting a local one; `lab_args`: more options."""
        self.root = Path(root)
        self.token = token
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []
        self.env = {
            **os.environ,
            "WALNUT_HOME": str(self.root / "renter"),
            "WALNUT_LEDGER": str(self.root / "ledger.sqlite"),
            "WALNUT_PROVIDER_HOME": str(self.root / "provider"),
            "JUPYTER_CONFIG_DIR": str(self.root / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(self.root / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(self.root / "jupyter-runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(self.root / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.root / "lab-workspaces"),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("WALNUT_PROVIDERS", None)
        self.provider_url = provider_url
        self.lab_args = list(lab_args)
        self.lab_port = 0
        self.lab: subprocess.Popen | None = None

    # --- processes --------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        self.logs.append(log)
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(cwd or self.root), start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> WalnutStack:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.provider_url:
            self._start_provider()
        self._start_lab()
        return self

    def _start_provider(self) -> None:
        home = self.root / "provider"
        init = subprocess.run([str(BIN / "walnut-provider"), "--home", str(home), "init",
                               "--name", "demo-node", "--port", "0"],
                              env=self.env, check=True, capture_output=True, text=True)
        # a node with a self-signed certificate serves https; renters pin its fingerprint
        pin = re.search(r"sha256=([0-9a-f]{64})", init.stdout + init.stderr)
        scheme = "https" if pin else "http"
        port_file = self.root / "provider.port"
        prov = self._spawn("provider", [str(BIN / "walnut-provider"), "--home", str(home), "serve",
                                        "--port", "0", "--port-file", str(port_file),
                                        "--runtime", RUNTIME, "--log-format", "text"])

        def provider_ready() -> str | None:
            # re-read the port each time: the file may be caught half written
            text = port_file.read_text().strip() if port_file.exists() else ""
            if not text.isdigit():
                return None
            url = f"{scheme}://127.0.0.1:{int(text)}"
            http_json(url + "/api/v1/status")
            return url

        url = wait_until(provider_ready, 60, "provider status", proc=prov)
        self.provider_url = f"{url}#sha256={pin.group(1)}" if pin else url

    def _start_lab(self) -> None:
        # enable the server extension explicitly (an editable install may lack the
        # etc/jupyter file a wheel installs)
        config_dir = self.root / "jupyter-config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}}}))
        # no "get notified about Jupyter news?" toast over the screenshots
        news = self.root / "lab-settings" / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True, exist_ok=True)
        (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        notebooks = self.root / "notebooks"
        notebooks.mkdir(exist_ok=True)
        self.lab_port = self.lab_port or free_port()  # a restart keeps its address
        self.env["WALNUT_PROVIDERS"] = self.provider_url
        name = "jupyterlab" if self.lab is None else f"jupyterlab-{len(self.procs)}"
        self.lab = lab = self._spawn(name, [
            str(BIN / "jupyter"), "lab", "--allow-root", "--no-browser",
            "--ip=127.0.0.1", f"--port={self.lab_port}", "--port-retries=0",
            f"--ServerApp.token={self.token}", "--ServerApp.password=",
            f"--ServerApp.root_dir={notebooks}",
            "--WalnutApp.poll_interval=1.0",
            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *self.lab_args,
        ], cwd=notebooks)
        wait_until(lambda: self.api("status"), 90, "JupyterLab with jupyter_walnut", proc=lab)

    def stop_lab(self) -> None:
        """JupyterLab exits as on Ctrl+C (SIGTERM, its extensions' shutdown runs); the
        provider and any browser page stay."""
        assert self.lab is not None, "JupyterLab was not started"
        os.killpg(self.lab.pid, signal.SIGTERM)
        self.lab.wait(timeout=60)

    def restart_lab(self) -> None:
        """JupyterLab again, at the same address, token and cookie secret."""
        self._start_lab()

    def api(self, path: str, method: str = "GET", body: dict | None = None,
            timeout: float = 30):
        return http_json(f"{self.base_url}walnut/{path}", method, body, self.token, timeout)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.lab_port}/"

    @property
    def lab_url(self) -> str:
        return f"{self.base_url}lab?token={self.token}"

    def stop(self) -> None:
        # JupyterLab first: it stops its sessions on the provider while that still answers
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        for log in self.logs:
            log.close()

    def __enter__(self) -> WalnutStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # a stack to look at by hand
    import tempfile

    def _stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with WalnutStack(Path(tempfile.mkdtemp(prefix="walnut-ui-"))) as stack:
        print(stack.lab_url, flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
