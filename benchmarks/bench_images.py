"""Launch to first result for each session image (issue #15): `python`, `scipy`, `pytorch`,
without and with requirements, cold and warm/cached, on the default stack.

    .venv/bin/python -m benchmarks.bench_images                 # 3 rounds, about 10 min
    .venv/bin/python -m benchmarks.bench_images --quick         # 1 round

What a user runs: a renter Jupyter Server (the Walnut extension, a funded wallet) in its own
process, and a provider node of the default stack (Docker runtime, TLS with the certificate
pinned by the renter: tests/stack.py's StackNode) on this machine. One launch is timed from
`POST /walnut/sessions` (quote, channel, provider start, install, the renter's hardware check,
kernelspec: the call returns when the session runs) through `POST /api/kernels` and the kernel
websocket to the first execute's result (`1+1` -> `2`). Every session is stopped before the
next launch.

Each round starts a new node (new state directory: no sessions, no prepared environments, an
empty package cache) and a new renter; per image, in order:

- `cold`: the first session of that image on the new node (the image itself is built before
  the rounds, cached by its content hash; a build, when one happens, is reported apart);
- `warm`: the next sessions of the same image;
- `requirements, install`: a launch with requirements (`--requirements`, default two small
  pure-Python packages in no image) that the provider installs before handing over the
  kernel, through its package cache (new each round, so it fetches them from its upstream:
  a local index of wheels downloaded on the host, tests/package_index.py);
- `requirements, cached`: the same renter, image and requirements again: the prepared
  environment is reused, pip does not run.

The requirement rows run only where the provider takes `requirements` at launch; otherwise
they print "n/a: not implemented". All runs are printed, then median and spread (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    LOCALHOST,
    ROOT,
    VENV_BIN,
    Figure,
    KernelWS,
    Procs,
    free_port,
    http_json,
    isolated_jupyter_env,
    log,
    median,
    open_ws,
    run_main,
    wait_http,
    write_json,
)

sys.path.insert(0, str(ROOT / "tests"))  # the default stack, as the tests run it

GROUP = "#15 images"
IMAGES = ("python", "scipy", "pytorch")
SHAPE = "cpu-2"
PRICE = 1000
BUDGET = 1200 * PRICE
ROWS = ("cold", "warm", "requirements, install", "requirements, cached")
NOT_IMPLEMENTED = "n/a: not implemented"


class Renter:
    """A renter's `jupyter server` with the Walnut extension and a funded wallet."""

    def __init__(self, procs: Procs, base: Path, provider_url: str, ledger_path: Path,
                 verify: bool = True) -> None:
        from jupyter_walnut.common.keys import KeyPair
        from jupyter_walnut.ledger import LocalLedger

        home = base / "walnut-home"
        home.mkdir(parents=True, mode=0o700)
        key = KeyPair.generate()
        key.save(home / "wallet.key")
        with LocalLedger(ledger_path) as ledger:
            ledger.fund(key.address, 10**15)
        self.port, self.token = free_port(), secrets.token_urlsafe(16)
        self.url = f"http://{LOCALHOST}:{self.port}"
        env = isolated_jupyter_env(base)
        (base / "root").mkdir()
        (base / "config" / "jupyter_server_config.json").write_text(json.dumps({
            "ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [provider_url], "walnut_home": str(home),
                          "ledger_path": str(ledger_path), "poll_interval": 0.5,
                          "challenge_period": 60},
            "RenterManager": {"verify_launches": verify}}))
        self.log_path = base / "server.log"
        self.proc = procs.start("renter server", [
            str(VENV_BIN / "jupyter"), "server", f"--ServerApp.ip={LOCALHOST}",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", "--ServerApp.open_browser=False",
            "--allow-root", f"--ServerApp.root_dir={base / 'root'}"], env=env,
            log_path=self.log_path, cwd=base)
        self.headers = {"Authorization": f"token {self.token}"}
        wait_http(self.url + "/api/status", 60, self.proc, self.headers, self.log_path)

    async def call(self, method: str, path: str, body=None, timeout: float = 600.0):
        return await http_json(method, f"{self.url}/{path}", body, self.headers, timeout)

    async def launch_to_first_result(self, provider_url: str, image: str,
                                     requirements: str | None) -> tuple[float, float, dict]:
        """(seconds to the first result, seconds of the POST alone, the session)."""
        body = {"provider_url": provider_url, "shape": SHAPE, "image": image,
                "budget_mist": BUDGET}
        if requirements is not None:
            body["requirements"] = requirements
        t0 = time.perf_counter()
        session = await self.call("POST", "walnut/sessions", body)
        t_post = time.perf_counter() - t0
        try:
            kernel = await self.call("POST", "api/kernels", {"name": session["kernel_name"]})
            url = self.url.replace("http", "ws", 1) + f"/api/kernels/{kernel['id']}/channels"
            ws = KernelWS(await open_ws(url, self.headers))
            try:
                result = await ws.execute("1+1", timeout=300)
            finally:
                ws.close()
            took = time.perf_counter() - t0
            if result.text.strip() != "2":
                raise RuntimeError(f"{image}: the first execute gave {result.status} "
                                   f"{result.text!r} {result.error}")
        finally:
            await self.call("DELETE", f"walnut/sessions/{session['id']}")
        return took, t_post, session


def build_images(images: list[str]) -> dict[str, float]:
    """Build what is missing (cached by content hash); seconds per image that was built."""
    import docker

    from jupyter_walnut.provider.image import ensure_gateway_image

    built: dict[str, float] = {}
    client = docker.from_env()
    try:
        for image in images:
            steps: list[str] = []
            t0 = time.perf_counter()
            tag = ensure_gateway_image(client, progress=steps.append, flavor=image)
            if steps:
                built[image] = time.perf_counter() - t0
            log(f"{image}: {tag}" + (f" built in {built[image]:.0f} s" if steps else ""))
    finally:
        client.close()
    return built


def refused_requirements(exc: Exception) -> bool:
    text = str(exc)
    return "HTTP 400" in text and "requirements" in text


async def one_round(n: int, images: list[str], warm: int, requirements: str, verify: bool,
                    runs: dict[tuple[str, str], list[float]], notes: dict) -> None:
    from conftest import provider_config
    from package_index import PackageIndex, host_wheels
    from stack import StackNode

    from jupyter_walnut.ledger import LocalLedger

    procs = Procs()
    # the package cache's upstream: wheels downloaded on the host, served on loopback (as the
    # tests do), so an install costs the cache and pip, not this machine's internet link
    index = PackageIndex(await asyncio.to_thread(host_wheels))
    procs.closers.append(index.close)
    tmp = Path(tempfile.mkdtemp(prefix=f"walnut-bench-images-{n}-"))
    ledger = LocalLedger(tmp / "ledger.sqlite")
    config = provider_config(
        provider={"name": "bench-images", "runtime": "docker"},
        shapes=[{"name": SHAPE, "gpus": 0, "cpus": 2, "memory_mb": 4096,
                 "price_per_second_mist": PRICE}],
        images=[{"name": i, "reference": f"builtin:{i}"} for i in images],
        packages={"upstream_url": index.url})
    node = await asyncio.to_thread(StackNode, tmp / "provider", ledger, config=config)
    try:
        cache = node.node.package_cache  # a running node: its cache up before the first launch
        if cache is not None and not await asyncio.to_thread(node.run, cache.wait_ready(), 200):
            raise RuntimeError(f"the package cache did not start: {cache.reason}")
        renter = await asyncio.to_thread(Renter, procs, tmp / "renter", node.pinned_url,
                                         ledger.path, verify)
        for image in images:
            for k in range(1 + warm):
                row = "cold" if k == 0 else "warm"
                took, post, _ = await renter.launch_to_first_result(node.pinned_url, image, None)
                runs[(image, row)].append(took)
                log(f"round {n} {image} {row}: {took:.2f} s (POST {post:.2f} s)")
            if notes.get("requirements") == NOT_IMPLEMENTED:
                continue
            for row in ROWS[2:]:
                try:
                    took, post, session = await renter.launch_to_first_result(
                        node.pinned_url, image, requirements)
                except RuntimeError as exc:
                    if not refused_requirements(exc):
                        raise
                    notes["requirements"] = NOT_IMPLEMENTED
                    log(f"requirements refused ({exc}): {NOT_IMPLEMENTED}")
                    break
                state = (session.get("environment") or {}).get("state")
                notes.setdefault(f"{image} {row} states", []).append(state)
                runs[(image, row)].append(took)
                log(f"round {n} {image} {row}: {took:.2f} s (POST {post:.2f} s, "
                    f"environment {state})")
    finally:
        procs.close()
        await asyncio.to_thread(node.stop)
        ledger.close()


def table(images: list[str], runs: dict, notes: dict) -> list[str]:
    lines = [f"{'image':8} {'launch':24} {'median':>8} {'spread':>15}  runs (s)",
             "-" * 90]
    for image in images:
        for row in ROWS:
            values = runs[(image, row)]
            if not values:
                reason = notes.get("requirements", "not run") if "requirements" in row \
                    else "not run"
                lines.append(f"{image:8} {row:24} {reason}")
                continue
            spread = f"{min(values):.2f}-{max(values):.2f}"
            lines.append(f"{image:8} {row:24} {median(values):>7.2f}s {spread:>15}  "
                         + " ".join(f"{v:.2f}" for v in values))
    return lines


async def run(args) -> int:
    images = [i.strip() for i in args.images.split(",") if i.strip()]
    rounds = 1 if args.quick else args.rounds
    warm = 1 if args.quick else args.warm
    log(f"building the images if needed: {', '.join(images)}")
    built = await asyncio.to_thread(build_images, images)
    runs: dict[tuple[str, str], list[float]] = {(i, r): [] for i in images for r in ROWS}
    notes: dict = {}
    for n in range(1, rounds + 1):
        await one_round(n, images, warm, args.requirements, not args.no_verify, runs, notes)
    print()
    print(f"Launch to first result, {SHAPE} sessions, default stack (Docker + TLS pinned); "
          f"{rounds} round(s) of a new node and renter; requirements: "
          f"{args.requirements.strip()!r}; hardware check "
          f"{'off (--no-verify)' if args.no_verify else 'on'}")
    for line in table(images, runs, notes):
        print(line)
    for image, seconds in built.items():
        print(f"(image {image} was built in this run: {seconds:.0f} s, before the rounds)")
    for key, states in notes.items():
        if key.endswith("states"):
            print(f"environment state reported, {key[:-7]}: {', '.join(map(str, states))}")
    figures = [Figure(GROUP, f"{image} {row}", median(runs[(image, row)]) if runs[(image, row)]
                      else None, "s", note=" ".join(f"{v:.2f}" for v in runs[(image, row)]),
                      skipped="" if runs[(image, row)] else
                      notes.get("requirements", "not run"))
               for image in images for row in ROWS]
    write_json(figures, args.json)
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one round, one warm launch")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--images", default=",".join(IMAGES), help="comma-separated flavors")
    p.add_argument("--rounds", type=int, default=3, help="new node + renter each (default 3)")
    p.add_argument("--warm", type=int, default=2, help="warm launches per round and image")
    p.add_argument("--requirements", default="tabulate\ntoolz\n",
                   help="requirements text of the requirement rows")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the renter's hardware check of each launch (a busy machine "
                   "fails its throughput floor)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_main(run, parse_args()))
