"""Offers by image (issue #15): each offer lists its images with their key package versions,
and `GET /walnut/offers` / `%walnut providers` narrow the list by image name, a package
requirement (`torch>=2`) and CUDA. The catalog provider here is a small HTTP app on loopback
answering a chosen status (as in test_hostile_providers), next to a real provider node whose
images predate package lists or list this machine's own."""

from __future__ import annotations

import asyncio
import json
import threading
from urllib.parse import parse_qsl, quote

import pytest
from tornado import web
from tornado.httpclient import HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jupyter_walnut.common.errors import BadRequest
from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.renter.offer_filters import (
    filter_offers,
    image_details,
    image_label,
    parse_image_filter,
)

pytestmark = pytest.mark.timeout(120)

SCIPY = {"python": "3.11.2", "numpy": "2.2.6", "pandas": "2.2.3", "sklearn": "1.6.1",
         "torch": None, "cuda": None}
TORCH_CPU = {**SCIPY, "torch": "2.13.0+cpu", "torchvision": "0.28.0+cpu"}
TORCH_CUDA = {**SCIPY, "python": "3.12.1", "torch": "2.13.0+cu124", "cuda": "12.4"}
HOSTILE = {"<script>alert(1)</script>": "1", "numpy": "9" * 1000, "pandas": {"v": "2"},
           "scipy": 1.5, "ok": "1.0"}


def catalog_status() -> dict:
    key = KeyPair.generate()
    return {
        "node": "catalog", "provider_address": key.address,
        "provider_public_key": key.public_key.hex(), "region": "eu", "runtime": "docker",
        "capacity": {"free_session_slots": 3},
        "shapes": [{"name": "cpu-4", "gpus": 0, "cpus": 4, "memory_mb": 8192,
                    "price_mist_per_second": 100, "price_mist_per_hour": 360_000,
                    "gpu_model": None, "gpu_memory_mb": None, "available": True}],
        "images": [
            {"name": "scipy", "description": "research", "flavor": "scipy", "packages": SCIPY},
            {"name": "pytorch", "flavor": "pytorch", "packages": TORCH_CPU},
            {"name": "pytorch-cuda", "flavor": "pytorch", "packages": TORCH_CUDA},
            {"name": "odd", "flavor": "<b>", "packages": HOSTILE},
            {"name": "legacy", "description": "no package list"},
        ],
        "max_session_seconds": 3600,
    }


class Catalog:
    """A provider that only answers its status, on its own loop in a thread."""

    def __init__(self) -> None:
        status = json.dumps(catalog_status()).encode()

        class Handler(web.RequestHandler):
            def get(self) -> None:
                self.set_header("Content-Type", "application/json")
                if self.request.path != "/api/v1/status":
                    self.set_status(404)
                self.finish(status if self.request.path == "/api/v1/status" else b"{}")

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> tuple[HTTPServer, int]:
            sockets = bind_sockets(0, "127.0.0.1")
            server = HTTPServer(web.Application([(r"/.*", Handler)]))
            server.add_sockets(sockets)
            return server, sockets[0].getsockname()[1]

        self.server, port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        async def close() -> None:
            self.server.stop()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def catalog():
    c = Catalog()
    yield c
    c.stop()


@pytest.fixture
def jp_server_config(catalog, threaded_provider, tmp_path):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [catalog.url, threaded_provider.url],
                          "walnut_home": str(tmp_path / "server-renter")}}


def params(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


async def offers(jp_fetch, query: str = "") -> list[dict]:
    resp = await jp_fetch("walnut", "offers", params=params(query))
    return json.loads(resp.body)["offers"]


def names(rows: list[dict]) -> list[tuple[str, list[str]]]:
    return sorted((r["node"], r["matching_images"]) for r in rows)


async def test_rest_offers_list_images_with_versions_and_filter_by_them(jp_fetch):
    rows = await offers(jp_fetch)
    catalog = next(r for r in rows if r["node"] == "catalog")
    by_name = {i["name"]: i for i in catalog["image_details"]}
    assert catalog["images"] == ["scipy", "pytorch", "pytorch-cuda", "odd", "legacy"]
    assert by_name["pytorch"]["packages"]["torch"] == "2.13.0+cpu"
    assert by_name["pytorch-cuda"]["packages"]["cuda"] == "12.4"
    assert by_name["legacy"]["packages"] is None  # unknown, not an error
    # the provider's junk is dropped, never passed on: no markup, no megabytes, no objects
    assert by_name["odd"]["packages"] == {"ok": "1.0"} and by_name["odd"]["flavor"] is None
    node = next(r for r in rows if r["node"] == "test-node")  # the real node: still listed
    assert node["images"] == ["python"]

    assert names(await offers(jp_fetch, "package=" + quote("torch>=2"))) == [
        ("catalog", ["pytorch", "pytorch-cuda"])]
    assert names(await offers(jp_fetch, "package=" + quote("torch>=2") + "&cuda")) == [
        ("catalog", ["pytorch-cuda"])]
    assert names(await offers(jp_fetch, "cuda=12")) == [("catalog", ["pytorch-cuda"])]
    assert await offers(jp_fetch, "cuda=" + quote(">=13")) == []
    assert names(await offers(jp_fetch, "image=scipy&package=" + quote("pandas==2.2.*"))) == [
        ("catalog", ["scipy"])]
    assert names(await offers(jp_fetch, "package=" + quote("python<3.12") + "&package=torch"))\
        == [("catalog", ["pytorch"])]
    # an image name needs no package list: the real node's python image matches it
    assert ("test-node", ["python"]) in names(await offers(jp_fetch, "image=python"))


@pytest.mark.parametrize("query, message", [
    ("package=" + quote("torch>>2"), "bad package filter 'torch>>2'"),
    ("package=" + quote("torch @ https://x/y.whl"), "only a name and a version specifier"),
    ("cuda=" + quote("twelve"), "bad CUDA filter 'twelve'"),
    ("colour=red", "unknown filter: colour"),
])
async def test_rest_refuses_a_bad_filter(jp_fetch, query, message):
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("walnut", "offers", params=params(query))
    assert err.value.code == 400
    assert message in json.loads(err.value.response.body)["message"]


def test_filters_and_labels_without_a_server():
    rows = [{"node": "n", "image_details": image_details(catalog_status()["images"])},
            {"node": "old", "image_details": image_details([{"name": "python"}])},
            {"node": "down", "healthy": False}]
    assert filter_offers(rows, parse_image_filter()) is rows  # no filter: all, unchanged
    got = filter_offers(rows, parse_image_filter(packages=["TORCH>=2.13,<3"]))
    assert [(r["node"], r["matching_images"]) for r in got] == [
        ("n", ["pytorch", "pytorch-cuda"])]
    assert filter_offers(rows, parse_image_filter(packages=["torch>=3"])) == []
    # the offer names scikit-learn by its import name; either name filters
    for req in ("scikit-learn>=1.6", "sklearn==1.6.*", "py<3.12"):
        assert [r["matching_images"] for r in filter_offers(rows, parse_image_filter(
            packages=[req]))][0][0] == "scipy", req
    assert [r["node"] for r in filter_offers(rows, parse_image_filter(image="PY"))] == [
        "n", "old"]  # scipy, pytorch(-cuda) and python all contain "py"
    with pytest.raises(BadRequest, match="bad package filter"):
        parse_image_filter(packages=["torch=>=2"])
    with pytest.raises(BadRequest, match="at most 16 package filters"):
        parse_image_filter(packages=["a"] * 17)
    labels = [image_label(i) for i in rows[0]["image_details"]]
    assert labels == ["scipy · py3.11", "pytorch · py3.11 · torch 2.13 (CPU)",
                      "pytorch-cuda · py3.12 · torch 2.13 (CUDA 12.4)", "odd", "legacy"]
    assert image_details("not a list") == [] and image_details([{"name": 5}, 7]) == []
    assert len(image_details([{"name": "x" * 10_000}])[0]["name"]) == 128


def test_magics_providers_filter_by_image(catalog, monkeypatch, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    import jupyter_walnut.renter.manager as manager

    monkeypatch.setenv("WALNUT_HOME", str(tmp_path / "renter"))
    monkeypatch.setattr(manager, "_current", None)
    monkeypatch.setenv("WALNUT_PROVIDERS", catalog.url)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_walnut")
    try:
        table = ip.run_line_magic("walnut", "providers --package 'torch>=2' --cuda")
        assert "1 offer(s)" in repr(table)
        assert "pytorch-cuda · py3.12 · torch 2.13 (CUDA 12.4)" in repr(table)
        assert "scipy · py3.11" not in repr(table)  # only the matching images are shown
        with capture_output() as cap:
            result = ip.run_cell("%walnut providers --package 'torch>>2'")
        assert not result.success
        assert "bad package filter 'torch>>2'" in cap.stderr and "Traceback" not in cap.stderr
    finally:
        ip.run_line_magic("unload_ext", "jupyter_walnut")
