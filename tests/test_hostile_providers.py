"""Hostile providers against the renter: malformed answers, replayed signatures, borrowed
reputation. A real provider of the default stack (Docker + TLS, pinned) is the honest one;
the hostile one is a small tornado app on loopback, also over pinned TLS, registered in the
same ledger registry, answering whatever each test makes it answer.

- one provider's nonsense is one unhealthy row of /walnut/offers; the others stay listed;
- a launch against a provider that answers nonsense fails with a 502 and costs nothing;
- a request the renter signed for the hostile provider is refused by the honest one;
- a node naming another provider's address about itself gains none of its reputation.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

import pytest
from stack import StackNode, tls_context
from tornado import httpclient, web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.tls import pinned_context
from jupyter_walnut.renter.manager import RenterManager
from jupyter_walnut.renter.provider_client import ProviderAPIError, ProviderClient
from jupyter_walnut.renter.reputation import provider_reputation
from jupyter_walnut.renter.store import RenterSession

pytestmark = pytest.mark.timeout(240)

FUNDS = 10**12
Answer = tuple[int, bytes]


class Hostile:
    """A fake provider on its own loop in a thread: HTTPS with a self-signed certificate,
    every request recorded, every answer chosen by `answer(method, path, body)`."""

    def __init__(self, directory) -> None:
        self.identity = KeyPair.generate()
        self.seen: list[dict] = []
        self.answer: Callable[[str, str, bytes], Answer] = lambda m, p, b: (404, b"{}")
        ssl_context, self.fingerprint = tls_context(directory, "hostile")
        hostile = self

        class Handler(web.RequestHandler):
            SUPPORTED_METHODS = ("GET", "POST", "DELETE")

            def _any(self) -> None:
                req = self.request
                hostile.seen.append({"method": req.method, "path": req.uri,
                                     "headers": dict(req.headers), "body": req.body})
                code, body = hostile.answer(req.method, req.path, req.body)
                self.set_status(code)
                self.set_header("Content-Type", "application/json")
                self.finish(body)

            get = post = delete = _any

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start() -> int:
            sockets = bind_sockets(0, "127.0.0.1")
            HTTPServer(web.Application([(r"/.*", Handler)]),
                       ssl_options=ssl_context).add_sockets(sockets)
            return sockets[0].getsockname()[1]

        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.url = f"https://127.0.0.1:{port}"
        self.pinned_url = f"{self.url}#sha256={self.fingerprint}"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The honest stack node and the hostile one, both in the ledger's registry."""
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp("hostile")
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        honest = StackNode(tmp / "honest", ledger)
        hostile = Hostile(tmp)
        try:
            for node in (honest, hostile):
                ledger.register_provider(node.identity, endpoint=node.url,
                                         tls_fingerprint=node.fingerprint or "00" * 32,
                                         specs="{}", price_per_second_mist=1000)
            # the hostile node answers like the honest one, under its own name and address
            honest_status = honest.run(honest.client(KeyPair.generate()).status())
            hostile.status = {**honest_status, "node": "hostile",
                              "provider_address": hostile.identity.address,
                              "provider_public_key": hostile.identity.public_key.hex(),
                              "tls_fingerprint": hostile.fingerprint}
            yield honest, hostile, ledger
        finally:
            hostile.stop()
            honest.stop()


def status_answer(status: dict | bytes) -> Callable[[str, str, bytes], Answer]:
    body = status if isinstance(status, bytes) else json.dumps(status).encode()
    return lambda method, path, _: (200, body) if path == "/api/v1/status" else (404, b"{}")


def without(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


MALFORMED_STATUS = {
    "missing shapes": lambda s: without(s, "shapes"),
    "shapes not a list": lambda s: {**s, "shapes": "plenty"},
    "price as a float": lambda s: {**s, "shapes": [{**s["shapes"][0],
                                                    "price_mist_per_second": 1.5}]},
    "price as text": lambda s: {**s, "shapes": [{**s["shapes"][0],
                                                 "price_mist_per_second": "1000"}]},
    "address not an address": lambda s: {**s, "provider_address": {"x": 1}},
    "a million shapes": lambda s: {**s, "shapes": [0] * 10**6},
    "huge body": lambda s: {**s, "padding": "x" * (8 * 1024 * 1024)},
    "deep nesting": lambda s: b"[" * 200_000 + b"]" * 200_000,
    "not JSON": lambda s: b"<html>the provider is down for maintenance</html>",
    "JSON null": lambda s: b"null",
}


@pytest.fixture
def renter_home(tmp_path, world):
    _, _, ledger = world
    home = tmp_path / "renter"
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    ledger.fund(key.address, FUNDS)
    return home


@pytest.fixture
def jp_server_config(world, renter_home):
    _, _, ledger = world  # both providers come from the ledger's registry, pinned
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [], "walnut_home": str(renter_home),
                          "ledger_path": str(ledger.path), "poll_interval": 3600,
                          "challenge_period": 0}}


def manager_of(jp_serverapp) -> RenterManager:
    return jp_serverapp.web_app.settings["walnut_manager"]


@pytest.mark.parametrize("kind", list(MALFORMED_STATUS))
async def test_one_malformed_provider_is_one_unhealthy_row(jp_fetch, world, kind):
    honest, hostile, _ = world
    hostile.answer = status_answer(MALFORMED_STATUS[kind](hostile.status))
    resp = await jp_fetch("walnut", "offers")
    assert resp.code == 200
    offers = json.loads(resp.body)["offers"]
    good = [o for o in offers if o["provider_url"] == honest.pinned_url]
    assert {o["shape"] for o in good} == {"cpu-small", "gpu-1"}
    assert all(o["healthy"] for o in good)
    bad = [o for o in offers if o["provider_url"] == hostile.pinned_url]
    assert len(bad) == 1 and bad[0]["healthy"] is False
    assert "provider sent an invalid" in bad[0]["error"], bad[0]["error"]
    assert len(bad[0]["error"]) <= 500


async def test_a_well_formed_hostile_provider_is_listed(jp_fetch, world):
    """Control: the same fake with a well-formed status is an offer like any other."""
    _, hostile, _ = world
    hostile.answer = status_answer(hostile.status)
    offers = json.loads((await jp_fetch("walnut", "offers")).body)["offers"]
    rows = [o for o in offers if o["provider_url"] == hostile.pinned_url]
    assert {o["shape"] for o in rows} == {"cpu-small", "gpu-1"} and rows[0]["healthy"]


SESSION_ID = "s-00000000000000aa"


def bad_session_answers(status: dict, created: bytes, polled: bytes):
    def answer(method: str, path: str, _body: bytes) -> Answer:
        if path == "/api/v1/status":
            return 200, json.dumps(status).encode()
        if method == "POST" and path == "/api/v1/sessions":
            return 201, created
        if path == f"/api/v1/sessions/{SESSION_ID}":
            return 200, polled
        return 404, b'{"error": {"status": 404, "message": "no"}}'
    return answer


GOOD_SESSION = {"id": SESSION_ID, "status": "starting", "reason": "", "running_seconds": 0,
                "cost_mist": 0}
MALFORMED_SESSIONS = {
    "created: no access token": (json.dumps(GOOD_SESSION).encode(), b""),
    "created: id is a path": (json.dumps({**GOOD_SESSION, "id": "../../etc",
                                          "access_token": "t" * 32}).encode(), b""),
    "created: not JSON": (b"created!", b""),
    "polled: cost as a float": (
        json.dumps({**GOOD_SESSION, "access_token": "t" * 32}).encode(),
        json.dumps({**GOOD_SESSION, "status": "running", "cost_mist": 0.5}).encode()),
    "polled: unknown status": (
        json.dumps({**GOOD_SESSION, "access_token": "t" * 32}).encode(),
        json.dumps({**GOOD_SESSION, "status": "paid-in-full"}).encode()),
}


@pytest.mark.parametrize("kind", list(MALFORMED_SESSIONS))
async def test_launch_on_a_malformed_provider_fails_and_costs_nothing(
        jp_fetch, jp_serverapp, world, kind):
    _, hostile, ledger = world
    created, polled = MALFORMED_SESSIONS[kind]
    hostile.answer = bad_session_answers(hostile.status, created, polled)
    manager = manager_of(jp_serverapp)
    manager.payments.refund_after_s = 0  # recover a refused launch's channel at once
    before = ledger.balance(manager.key.address)
    with pytest.raises(httpclient.HTTPClientError) as err:
        await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
            {"provider_url": hostile.pinned_url, "shape": "cpu-small", "budget_mist": 60_000}))
    assert err.value.code == 502
    message = json.loads(err.value.response.body)["message"]
    assert "provider sent an invalid" in message, message
    assert not [s for s in manager.store.list() if s.status in ("starting", "running")]
    deadline = time.monotonic() + 60
    while ledger.balance(manager.key.address) != before:  # the deposit comes back whole
        assert time.monotonic() < deadline, "the launch's deposit was not refunded"
        await manager.settle()
        await asyncio.sleep(0.2)
    channels = ledger.channels(renter=manager.key.address)
    assert all(ch.closed and ch.claimed == 0 for ch in channels)


@pytest.mark.asyncio
async def test_a_request_signed_for_one_provider_is_refused_by_another(world):
    honest, hostile, _ = world
    hostile.answer = lambda m, p, b: ((200, json.dumps(hostile.status).encode())
                                      if p == "/api/v1/status" else (200, b'{"sessions": []}'))
    key = KeyPair.generate()
    assert await ProviderClient(hostile.pinned_url, key).list_sessions() == []
    captured = next(r for r in hostile.seen if r["path"] == "/api/v1/sessions"
                    and "X-Walnut-Signature" in r["headers"])
    headers = {k: v for k, v in captured["headers"].items() if k.startswith("X-Walnut-")}
    # the hostile provider replays the renter's signed request to the honest one
    context = pinned_context(honest.url, honest.fingerprint)
    resp = await httpclient.AsyncHTTPClient().fetch(httpclient.HTTPRequest(
        honest.url + "/api/v1/sessions", headers=headers, ssl_options=context),
        raise_error=False)
    assert resp.code == 401
    assert "another provider" in json.loads(resp.body)["error"]["message"]
    # the same request, signed for the honest provider, works
    assert await honest.client(key).list_sessions() == []


def completed_session(honest: StackNode, n: int) -> RenterSession:
    now = time.time() - 3600
    return RenterSession(
        id=f"s-{n:016x}", provider_url=honest.pinned_url,
        provider_address=honest.identity.address, node="stack-node", shape="cpu-small",
        image="python", gpus=0, cpus=1, memory_mb=1024, price_mist_per_second=1000,
        max_seconds=60, budget_mist=60_000, status="stopped", reason="stopped by you",
        created_at=now + n, started_at=now + n, ended_at=now + n + 30, access_token="",
        extra={"verification": {"ok": True}})


@pytest.fixture
def unregistered(tmp_path):
    node = Hostile(tmp_path)
    yield node
    node.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("registered", [True, False], ids=["registered", "configured"])
async def test_a_node_naming_another_providers_address_gains_none_of_its_reputation(
        world, unregistered, tmp_path, registered):
    """The impostor is the registered hostile node (its entry names its own owner) or a
    URL configured by hand that no registry entry names."""
    honest, hostile, ledger = world
    hostile = hostile if registered else unregistered
    impostor = {**world[1].status, "provider_address": honest.identity.address,
                "provider_public_key": honest.identity.public_key.hex()}
    hostile.answer = status_answer(impostor)
    manager = RenterManager(tmp_path / "renter", [hostile.pinned_url], key=KeyPair.generate(),
                            ledger=ledger)
    for n in range(3):  # the honest provider's record with this renter
        manager.store.insert(completed_session(honest, n))
    offers = await manager.offers()
    honest_row = next(o for o in offers if o["provider_url"] == honest.pinned_url)
    assert honest_row["reliability"] is not None
    assert honest_row["evidence"]["completed"] == 3
    impostor_rows = [o for o in offers if o["provider_url"] == hostile.pinned_url]
    assert impostor_rows
    for row in impostor_rows:  # its own record (channels it left to recover) is its own
        assert row["verified"] is None and row["reliability"] != honest_row["reliability"]
        assert row["evidence"]["completed"] == row["evidence"]["verified_ok"] == 0
    if registered:  # its registry entry names another owner: not an offer at all
        assert impostor_rows[0]["healthy"] is False
        assert "registry entry" in impostor_rows[0]["error"]
    history = {tuple(p["provider_urls"]): p for p in provider_reputation(manager)}
    assert history[(honest.pinned_url,)]["evidence"]["completed"] == 3
    assert history[(honest.pinned_url,)]["provider_address"] == honest.identity.address


async def test_a_launch_never_pays_an_address_the_registry_denies(jp_fetch, jp_serverapp,
                                                                  world):
    """A registered node that names another provider's address in its status would have the
    renter's channel pay that address: the launch is refused before any money moves."""
    honest, hostile, ledger = world
    hostile.answer = status_answer({**hostile.status,
                                    "provider_address": honest.identity.address,
                                    "provider_public_key": honest.identity.public_key.hex()})
    manager = manager_of(jp_serverapp)
    before = ledger.balance(manager.key.address)
    seen = len(hostile.seen)  # the node is shared by this module's tests
    with pytest.raises(httpclient.HTTPClientError) as err:
        await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
            {"provider_url": hostile.pinned_url, "shape": "cpu-small", "budget_mist": 60_000}))
    assert err.value.code == 409
    message = json.loads(err.value.response.body)["message"]
    assert "registry entry for this endpoint belongs to" in message, message
    assert ledger.balance(manager.key.address) == before
    assert ledger.channels(renter=manager.key.address) == []
    assert not [r for r in hostile.seen[seen:] if r["path"] == "/api/v1/sessions"]


@pytest.mark.asyncio
async def test_an_oversized_answer_is_refused_while_reading(world):
    """The body cap stops the read: a provider streaming without end costs a bounded read."""
    _, hostile, _ = world
    hostile.answer = status_answer(b"[" + b"0," * (16 * 1024 * 1024) + b"0]")
    with pytest.raises(ProviderAPIError) as err:
        await ProviderClient(hostile.pinned_url, KeyPair.generate()).status()
    assert err.value.status == 502 and "body over" in err.value.message
