"""Access-control attacks on the default stack (Docker runtime, TLS with pinning) on loopback.

A captured renter signature replayed to another path, method or body; one session's token
on another session's gateway and kernel websocket; the token in the URL instead of the
header; and what leaks: session tokens must never reach the provider's logs (nor the
gateway's), error messages must never carry tokens or keys. `WALNUT_TEST_RUNTIME=process` /
`WALNUT_TEST_TLS=off` run the same attacks on the cheap leg.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import pytest
from conftest import open_channel, provider_config
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from kernel_ws import KernelWS
from stack import StackNode, stack_runtime
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.signed_requests import sign_request
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.renter.provider_client import ProviderClient

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    config = provider_config(provider={"name": "access-node", "runtime": stack_runtime()},
                             availability={"max_sessions": 4})
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        stack = StackNode(tmp / "provider", ledger, config=config)
        stack.audience = stack.fingerprint or stack.identity.address
        # the attacker talks TLS to the node like anyone; it trusts the node's certificate
        stack.ca_certs = str(tmp / "provider" / "provider" / "cert.pem") if stack.tls else None
        try:
            yield stack
        finally:
            stack.stop()


@dataclass
class Renter:
    key: KeyPair
    created: dict
    kernel: dict

    @property
    def sid(self) -> str:
        return self.created["id"]

    @property
    def token(self) -> str:
        return self.created["access_token"]


async def running_session(node: StackNode, key: KeyPair) -> Renter:
    client = node.client(key)
    created = await client.create_session(image="python",
                                          channel_id=open_channel(node.ledger, key, node))
    await client.wait_running(created["id"])
    kernel = await client.gateway(created["id"], created["access_token"], "POST",
                                  "api/kernels", {"name": "python3"})
    return Renter(key, created, kernel)


@pytest.fixture(scope="module")
def alice(node) -> Renter:
    return node.run(running_session(node, KeyPair.generate()))


@pytest.fixture(scope="module")
def bob(node) -> Renter:
    return node.run(running_session(node, KeyPair.generate()))


class Responses:
    """Every response body the attacks got back, to search for secrets afterwards."""

    def __init__(self, node: StackNode) -> None:
        self.bodies: list[str] = []
        self.ca_certs = node.ca_certs

    async def fetch(self, url: str, method: str = "GET", headers=None, body=None):
        if method in ("POST", "PUT") and body is None:
            body = b""
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(url, method=method, headers=headers or {}, body=body,
                        allow_nonstandard_methods=True, request_timeout=30,
                        ca_certs=self.ca_certs),
            raise_error=False)
        self.bodies.append((resp.body or b"").decode(errors="replace"))
        return resp

    async def ws_refused(self, url: str, headers=None) -> int:
        try:
            conn = await websocket_connect(HTTPRequest(url, headers=headers or {},
                                                       request_timeout=30,
                                                       ca_certs=self.ca_certs))
        except HTTPClientError as exc:
            self.bodies.append((exc.response.body or b"").decode(errors="replace")
                               if exc.response is not None else "")
            return exc.code
        conn.close()
        return 101


def ws_url(node: StackNode) -> str:
    return node.url.replace("http", "ws", 1)


def gateway_log(node: StackNode, sid: str) -> str:
    """What the session's gateway wrote (container log or process log file)."""
    handle = node.sessions._handles[sid]
    return node.run(node.node.runtime.logs(handle, tail=100_000))


def secrets_of(provider, *keys: KeyPair, created=()) -> dict[str, str]:
    def private_hex(key: KeyPair) -> str:
        return key.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw,
                                             NoEncryption()).hex()

    found = {f"access token of {c['id']}": c["access_token"] for c in created}
    for c in created:
        found[f"gateway token of {c['id']}"] = provider.store.get(c["id"]).gateway_token
    for i, key in enumerate(keys):
        found[f"renter {i} private key"] = private_hex(key)
        found[f"renter {i} private key (bech32)"] = key.to_bech32() \
            if hasattr(key, "to_bech32") else private_hex(key)
    found["provider private key"] = private_hex(provider.identity)
    return found


async def test_signature_replayed_to_another_path_method_or_body_is_refused(node, alice):
    client = ProviderClient(node.pinned_url, alice.key)
    sid = alice.sid
    sessions = len(node.store.list())
    seen = Responses(node)
    url = node.url
    # one genuine request, captured on the wire
    path = f"/api/v1/sessions/{sid}"
    headers = sign_request(alice.key, "GET", path, audience=node.audience)
    attacks = [
        ("GET", "/api/v1/sessions", None),  # another path
        ("GET", path + "?x=1", None),  # the same path with a query added
        ("DELETE", path, None),  # another method on the same path
        ("POST", "/api/v1/sessions", json.dumps({"image": "python"}).encode()),
        ("POST", f"{path}/vouchers", json.dumps({"amount_mist": "0",
                                                 "signature": "00" * 64}).encode()),
    ]
    for method, target, body in attacks:
        resp = await seen.fetch(url + target, method, headers, body)
        assert resp.code == 401, (method, target, resp.code, resp.body)
        assert json.loads(resp.body)["error"]["message"] == "bad request signature"
    # the genuine request works once; the same bytes again are a replay
    assert (await seen.fetch(url + path, "GET", headers)).code == 200
    replay = await seen.fetch(url + path, "GET", headers)
    assert replay.code == 401
    assert json.loads(replay.body)["error"] == {"status": 401,
                                                "message": "replayed request refused"}
    # a signature with a fresh nonce but an old timestamp is refused too
    stale = sign_request(alice.key, "GET", path, audience=node.audience, now=time.time() - 3600)
    assert (await seen.fetch(url + path, "GET", stale)).code == 401
    # a signature for another node (its address, not this node's pin) is refused
    elsewhere = sign_request(alice.key, "GET", path, audience=KeyPair.generate().address)
    assert (await seen.fetch(url + path, "GET", elsewhere)).code == 401
    # the session was never touched by any of it
    assert (await client.get_session(sid))["status"] == "running"
    assert len(node.store.list()) == sessions
    leaks = [name for name, value in secrets_of(node, alice.key, created=[alice.created]).items()
             for body in seen.bodies if value in body]
    assert not leaks


async def test_one_sessions_token_does_not_open_another_sessions_gateway(node, alice, bob):
    seen = Responses(node)
    a, b = alice.created, bob.created
    with_b_token = {"Authorization": f"token {bob.token}"}
    # bob's token on alice's session: REST and websocket, alice's kernel id or bob's own
    for kernel_id in (alice.kernel["id"], bob.kernel["id"]):
        code = await seen.ws_refused(
            f"{ws_url(node)}/api/v1/sessions/{a['id']}/gateway/api/kernels/{kernel_id}/channels",
            with_b_token)
        assert code == 403, kernel_id
    resp = await seen.fetch(f"{node.url}/api/v1/sessions/{a['id']}/gateway/api/kernelspecs",
                            headers=with_b_token)
    assert resp.code == 403
    # bob's token through bob's own session cannot reach alice's kernel either: each
    # session is its own gateway, alice's kernel id is unknown there
    code = await seen.ws_refused(
        f"{ws_url(node)}/api/v1/sessions/{b['id']}/gateway/api/kernels/{alice.kernel['id']}"
        "/channels", with_b_token)
    assert code == 404
    # alice's session is unharmed
    a_client = ProviderClient(node.pinned_url, alice.key)
    ws = KernelWS(await a_client.kernel_websocket(a["id"], alice.token, alice.kernel["id"]))
    assert (await ws.execute("print('mine')")).stdout == "mine\n"
    ws.conn.close()
    leaks = [name for name, value in
             secrets_of(node, alice.key, bob.key, created=[a, b]).items()
             for body in seen.bodies if value in body]
    assert not leaks, leaks


async def test_token_in_the_url_query_is_not_accepted(node, alice):
    sid, token = alice.sid, alice.token
    seen = Responses(node)
    base = f"{node.url}/api/v1/sessions/{sid}/gateway"
    ws_base = base.replace("http", "ws", 1)
    for query in (f"token={token}", f"access_token={token}", f"session_token={token}"):
        resp = await seen.fetch(f"{base}/api/kernelspecs?{query}")
        assert resp.code == 401, (query, resp.code)
        code = await seen.ws_refused(
            f"{ws_base}/api/kernels/{alice.kernel['id']}/channels?{query}")
        assert code == 401, (query, code)
    # nor in a cookie, nor under another header name
    for headers in ({"Cookie": f"token={token}"}, {"X-Walnut-Session": token},
                    {"Authorization": f"Basic {token}"}, {"Authorization": token}):
        assert (await seen.fetch(f"{base}/api/kernelspecs", headers=headers)).code == 401, headers
    # the header form works (control)
    ok = await seen.fetch(f"{base}/api/kernelspecs", headers={"Authorization": f"token {token}"})
    assert ok.code == 200


async def test_session_tokens_never_reach_the_provider_logs(node, bob, caplog):
    """A whole session's life, the token used the right way, through REST and websocket,
    and wrong ways; nothing the provider or the session's gateway logs names a token."""
    caplog.set_level(logging.DEBUG)
    carol = await running_session(node, KeyPair.generate())
    c_client = ProviderClient(node.pinned_url, carol.key)
    sid, token = carol.sid, carol.token
    seen = Responses(node)
    ws = KernelWS(await c_client.kernel_websocket(sid, token, carol.kernel["id"]))
    assert (await ws.execute("print(1 + 1)")).stdout == "2\n"
    ws.conn.close()
    base = f"{node.url}/api/v1/sessions/{sid}/gateway"
    b_auth = {"Authorization": f"token {bob.token}"}
    await seen.fetch(f"{base}/api/kernelspecs", headers=b_auth)
    await seen.fetch(f"{base}/api/kernelspecs", headers={"Authorization": "token wrong-" + token})
    await seen.fetch(f"{base}/api/nope", headers={"Authorization": f"token {token}"})
    secrets = secrets_of(node, carol.key, bob.key, created=[carol.created, bob.created])
    gateway_text = gateway_log(node, sid)  # read before the stop removes the gateway
    assert "kernel" in gateway_text.lower()  # the gateway did log the session's kernel
    await c_client.stop_session(sid)
    stopped = await seen.fetch(f"{base}/api/kernelspecs", headers={"Authorization":
                                                                    f"token {token}"})
    assert stopped.code == 409
    text = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records)
    assert len(caplog.records) > 5  # the provider did log the session's life
    leaks = [name for name, value in secrets.items() if value in text + "\n" + gateway_text]
    assert not leaks, leaks
    body_leaks = [name for name, value in secrets.items() for body in seen.bodies
                  if value in body]
    assert not body_leaks, body_leaks


async def test_a_token_wrongly_sent_in_the_url_is_not_logged(node, alice, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"{node.url}/api/v1/sessions/{alice.sid}/gateway/api/kernels?token={alice.token}"
    resp = await Responses(node).fetch(url)
    assert resp.code == 401
    # the node logs on its own thread after the response left: wait for that record
    deadline = time.monotonic() + 10
    while not any(alice.sid in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the refused request was never logged"
        await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if alice.token in r.getMessage()]
