"""Public tutorial notebooks (issue #15) give the same outputs on a Walnut kernel of the `scipy`
image as on a local kernel, through the standard Jupyter Server API.

Each notebook in tests/data/notebooks/ (pandas, SciPy, scikit-learn and matplotlib tutorials;
sources and licenses in its README) runs cell by cell through one real Jupyter Server with the
Walnut extension: once on the server's local `python3` kernel (the test environment, whose
`test` extra pins the image's versions), once on a Walnut kernel of a `scipy` session on the
default stack (Docker + TLS, pinned). Per cell the two must agree on the reply status, the
streams, the text results, the error's name and value, the MIME types of every display, and
PNG figures must be real PNGs on both. Only what differs by nature between two processes is
normalized: memory addresses and the site-packages path in warnings. HTML is compared as the
renter shows it: the remote kernel's outputs pass Walnut's output policy, so the local HTML
goes through the same `sanitize` before the comparison.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nbformat
import pytest
from conftest import docker_or_skip, provider_config
from kernel_ws import ExecResult, KernelWS
from stack import StackNode, renter_server_config, stack_runtime

from jupyter_walnut.renter.kernel.output_policy import sanitize

pytestmark = pytest.mark.timeout(900)

NOTEBOOKS = sorted((Path(__file__).parent / "data" / "notebooks").glob("*.ipynb"))
IMAGE = "scipy"
PRICE = 1000
BUDGET = 1800 * PRICE  # half an hour of cpu-small: no notebook comes near it
CELL_TIMEOUT = 240  # the first import of scikit-learn on one cold CPU takes a while

ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,16}\b")
SITE_PACKAGES = re.compile(r"(/[^\s'\"]+)?/(site|dist)-packages/")
PNG = b"\x89PNG\r\n\x1a\n"


def normalize(text: str) -> str:
    return SITE_PACKAGES.sub("<site-packages>/", ADDRESS.sub("0x…", text))


def bundle(data: dict, local: bool) -> dict:
    """What a display or result shows, comparable across kernels."""
    if local:  # the remote one was cleaned by the renter's output policy on its way here
        data = sanitize("display_data", {"data": data, "metadata": {}})["data"]
    shown = {"mime": sorted(data)}
    for mime in ("text/plain", "text/html", "text/markdown", "text/latex"):
        if mime in data:
            shown[mime] = normalize(data[mime])
    for mime in ("image/png",):
        if mime in data:
            assert base64.b64decode(data[mime]).startswith(PNG), "a figure that is no PNG"
            shown[mime] = "a PNG"
    return shown


def outcome(result: ExecResult, local: bool) -> dict:
    error = result.error and {"ename": result.error["ename"],
                              "evalue": normalize(result.error["evalue"])}
    return {"status": result.status,
            "stdout": normalize(result.stdout), "stderr": normalize(result.stderr),
            "results": [bundle(d, local) for d in result.results],
            "displays": [bundle(d, local) for d in result.displays],
            "error": error}


async def run_notebook(jp_fetch, jp_ws_fetch, kernel_name: str, path: Path, local: bool
                       ) -> list[dict]:
    kernel = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps(
        {"name": kernel_name}), request_timeout=180)).body)
    ws = KernelWS(await jp_ws_fetch("api", "kernels", kernel["id"], "channels",
                                    max_message_size=256 * 1024 * 1024))
    try:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        return [outcome(await ws.execute(c.source, timeout=CELL_TIMEOUT), local)
                for c in cells]
    finally:
        ws.conn.close()
        await jp_fetch("api", "kernels", kernel["id"], method="DELETE")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from jupyter_walnut.ledger import LocalLedger

    if stack_runtime() == "docker":
        docker_or_skip()
        import docker

        from jupyter_walnut.provider.image import ensure_gateway_image

        client = docker.from_env()
        try:  # minutes the first time, then cached by hash
            ensure_gateway_image(client, progress=print, flavor=IMAGE)
        finally:
            client.close()
    state = tmp_path_factory.mktemp("tutorials")
    ledger = LocalLedger(state / "ledger.sqlite")
    config = provider_config(
        provider={"name": "tutorial-node", "runtime": stack_runtime()},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 2048,
                 "price_per_second_mist": PRICE}],
        images=[{"name": IMAGE, "reference": f"builtin:{IMAGE}"}],
        packages={"cache": "off"})  # nothing is installed here
    started = StackNode(state / "provider", ledger, config=config)
    yield started, ledger
    started.stop()
    ledger.close()


@pytest.fixture
def jp_server_config(node, tmp_path):
    started, ledger = node
    # the launch's hardware check is a throughput floor (tests/test_verify.py has it): on a
    # machine busy with other work it would fail launches this test is not about
    return renter_server_config(tmp_path / "renter", ledger.path, [started.pinned_url],
                                RenterManager={"verify_launches": False})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
async def test_a_tutorial_notebook_gives_the_same_outputs_remote_and_local(
        jp_fetch, jp_ws_fetch, node, path):
    started, _ = node
    local = await run_notebook(jp_fetch, jp_ws_fetch, "python3", path, local=True)
    session = json.loads((await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": started.pinned_url, "shape": "cpu-small", "image": IMAGE,
         "budget_mist": BUDGET}), request_timeout=300)).body)
    try:
        remote = await run_notebook(jp_fetch, jp_ws_fetch, session["kernel_name"], path,
                                    local=False)
    finally:
        await jp_fetch("walnut", "sessions", session["id"], method="DELETE")

    sources = [c.source for c in nbformat.read(path, as_version=4).cells
               if c.cell_type == "code"]
    assert len(remote) == len(local) == len(sources)
    for n, (source, here, there) in enumerate(zip(sources, local, remote, strict=True)):
        assert there == here, (
            f"{path.name} cell {n} differs on the Walnut kernel:\n{source}\n"
            f"--- local:\n{json.dumps(here, indent=1)}\n"
            f"--- walnut ({IMAGE}):\n{json.dumps(there, indent=1)}")
    assert any(o["results"] or o["stdout"] or o["displays"] for o in local)
