"""%%walnut run overhead: a trivial cell and a 100 MB array push/pull, against the plain
remote kernel round trip and the raw transfer rate of the same path.

    .venv/bin/python benchmarks/bench_magics.py [--repeats 30] [--mb 100]

One provider node (process runtime) on 127.0.0.1 in this process's background thread, one
session, one remote kernel; everything goes through the provider's proxy like a renter's
traffic. Timings are for this machine only and never go into tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def start_provider(state: Path, ledger):
    from conftest import provider_config

    from jupyter_walnut.common.keys import KeyPair
    from jupyter_walnut.provider.node import ProviderNode
    from jupyter_walnut.provider.runtimes.process import ProcessRuntime

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start():
        node = ProviderNode(provider_config(), KeyPair.generate(), state,
                            runtime=ProcessRuntime(state / "sessions"), ledger=ledger)
        return node, await node.start(host="127.0.0.1", port=0)

    node, port = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    return loop, node, f"http://127.0.0.1:{port}"


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.2f} ms (p90 " \
           f"{sorted(values)[int(len(values) * 0.9) - 1] * 1000:.2f} ms, n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()

    import numpy as np
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from jupyter_walnut.common.keys import KeyPair
    from jupyter_walnut.ledger import LocalLedger
    from jupyter_walnut.renter.jobs import loop as wloop

    tmp = Path(tempfile.mkdtemp(prefix="walnut-bench-"))
    ledger = LocalLedger(tmp / "ledger.sqlite")
    home = tmp / "renter"
    home.mkdir()
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    ledger.fund(key.address, 10**12)
    ploop, node, url = start_provider(tmp / "provider", ledger)
    os.environ.update(WALNUT_HOME=str(home), WALNUT_LEDGER=str(tmp / "ledger.sqlite"),
                      WALNUT_PROVIDERS=url)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_walnut")
    magics = ip.magics_manager.registry["WalnutMagics"]
    try:
        with capture_output():
            ip.run_line_magic("walnut", "launch --budget 3000000")
            ip.run_cell("%%walnut run\npass")  # starts and warms the remote kernel
        session_id = next(iter(magics._kernels))
        kernel = magics._kernels[session_id]

        # 1. the plain remote kernel round trip (same kernel, same connection, no magic)
        plain = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            wloop.run(kernel.execute("pass"))
            plain.append(time.perf_counter() - t)

        # 2. %%walnut run of a trivial cell, end to end as a user sees it
        magic = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            with capture_output():
                ip.run_cell("%%walnut run\npass")
            magic.append(time.perf_counter() - t)

        # 3. raw transfer: the same bytes as one binary comm message, no pickle on any side
        n = args.mb * 1_000_000
        payload = np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8)
        wloop.run(kernel.execute(
            "get_ipython().kernel.comm_manager.register_target('walnut.bench', "
            "lambda c, m: (c.send({'n': sum(len(b) for b in m['buffers'])}), c.close()))"))
        raw = []
        for _ in range(3):
            t = time.perf_counter()
            data, _ = wloop.run(kernel.comm_call("walnut.bench", {}, [payload.data]))
            raw.append(time.perf_counter() - t)
            assert data["n"] == n

        # 4. %%walnut run --push a --pull a of a 100 MB array
        ip.user_ns["a"] = payload
        push, pull, total = [], [], []
        for _ in range(3):
            t = time.perf_counter()
            with capture_output():
                ip.run_cell("%%walnut run --push a --pull a\na[0] = 1")
            total.append(time.perf_counter() - t)
            push.append(magics.last_run["push_s"])
            pull.append(magics.last_run["pull_s"])
        assert ip.user_ns["a"].nbytes == n and ip.user_ns["a"][0] == 1

        mb = n / 1e6
        print(f"plain remote kernel round trip (execute 'pass'): {ms(plain)}")
        print(f"%%walnut run 'pass' end to end:                  {ms(magic)}")
        print(f"  overhead of the magic: "
              f"{(statistics.median(magic) - statistics.median(plain)) * 1000:.2f} ms")
        best_raw = min(raw)
        print(f"raw transfer, one {mb:.0f} MB binary message there and an ack back: "
              f"{best_raw:.3f} s = {mb / best_raw:.0f} MB/s")
        print(f"%%walnut run push of a {mb:.0f} MB array: {min(push):.3f} s = "
              f"{mb / min(push):.0f} MB/s ({min(push) / best_raw:.2f}x raw)")
        print(f"%%walnut run pull of a {mb:.0f} MB array: {min(pull):.3f} s = "
              f"{mb / min(pull):.0f} MB/s")
        print(f"%%walnut run --push a --pull a, end to end: {min(total):.3f} s")
    finally:
        with capture_output():
            ip.run_line_magic("walnut", "stop --all")
        asyncio.run_coroutine_threadsafe(node.stop(stop_sessions=True), ploop).result(60)
        ploop.call_soon_threadsafe(ploop.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
