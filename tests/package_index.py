"""A PEP 503 simple index of wheels downloaded on the host: the package cache's upstream in
tests, so they run offline (the session never reaches a registry, nor does the cache).

`host_wheels()` downloads small pure-Python wheels that the session images do not contain, once
(`pip download --no-deps`, kept under .cache/test-wheels); `PackageIndex` serves them on
127.0.0.1 with each link's `#sha256=` fragment and counts every request, so a test can tell a
file the cache fetched from one it served from its own disk.
"""

from __future__ import annotations

import collections
import hashlib
import html
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WHEEL_DIR = Path(__file__).resolve().parent.parent / ".cache" / "test-wheels"
PACKAGES = ("tabulate", "toolz")  # pure Python, in no session image


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def host_wheels(packages: tuple[str, ...] = PACKAGES, directory: Path = WHEEL_DIR) -> Path:
    """`directory` with one wheel of each package (downloaded on the host the first time)."""
    directory.mkdir(parents=True, exist_ok=True)
    have = {_normalize(p.name.split("-")[0]) for p in directory.glob("*.whl")}
    missing = [p for p in packages if _normalize(p) not in have]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "--only-binary=:all:", "-d", str(directory), *missing],
                       check=True, capture_output=True, timeout=300)
    return directory


class PackageIndex:
    """Serves `/simple/`, `/simple/<project>/` and `/files/<wheel>` from a wheel directory."""

    def __init__(self, directory: Path) -> None:
        self.files = {p.name: p for p in sorted(Path(directory).glob("*.whl"))}
        self.requests: collections.Counter[str] = collections.Counter()
        self.tampered: set[str] = set()  # projects whose file's bytes no longer match its hash
        # projects whose file download waits until `release(project)`: a test can see an
        # install in progress however fast it would otherwise be
        self.held: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with index._lock:
                    index.requests[self.path] += 1
                gate = index.held.get(index.project(self.path[7:])) \
                    if self.path.startswith("/files/") else None
                if gate is not None:
                    gate.wait(120)  # bounded: a test that never releases fails, not hangs
                status, body, kind = index.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def project(self, filename: str) -> str:
        return _normalize(filename.split("-")[0])

    def wheel(self, project: str) -> Path:
        return next(p for name, p in self.files.items() if self.project(name) == project)

    def answer(self, path: str) -> tuple[int, bytes, str]:
        path = path.split("?")[0]
        if path.startswith("/files/") and path[7:] in self.files:
            data = self.files[path[7:]].read_bytes()
            if self.project(path[7:]) in self.tampered:  # an upstream (or a path) gone bad
                data = data[:-1] + bytes([data[-1] ^ 1])
            return 200, data, "application/octet-stream"
        parts = [p for p in path.split("/") if p]
        if parts == ["simple"]:
            names = sorted({self.project(n) for n in self.files})
            links = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in names)
            return 200, f"<html><body>{links}</body></html>".encode(), "text/html"
        if len(parts) == 2 and parts[0] == "simple":
            wheels = [n for n in self.files if self.project(n) == _normalize(parts[1])]
            if not wheels:
                return 404, b"not found", "text/plain"
            links = "".join(
                f'<a href="/files/{html.escape(n)}#sha256='
                f'{hashlib.sha256(self.files[n].read_bytes()).hexdigest()}">{n}</a>\n'
                for n in wheels)
            return 200, f"<html><body>{links}</body></html>".encode(), "text/html"
        return 404, b"not found", "text/plain"

    def hold(self, project: str) -> None:
        self.held[project] = threading.Event()

    def release(self, project: str) -> None:
        gate = self.held.pop(project, None)
        if gate is not None:
            gate.set()

    def file_fetches(self, project: str) -> int:
        """How often the file of `project` was downloaded from this index."""
        with self._lock:
            return sum(count for path, count in self.requests.items()
                       if path.startswith("/files/") and self.project(path[7:]) == project)

    def close(self) -> None:
        for project in list(self.held):
            self.release(project)
        self.server.shutdown()
        self.server.server_close()
