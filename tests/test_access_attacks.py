"""Access-control attacks on a real provider node (process runtime) on loopback.

A captured renter signature replayed to another path, method or body; one session's token
on another session's gateway and kernel websocket; the token in the URL instead of the
header; and what leaks: session tokens must never reach the provider's logs, error messages
must never carry tokens or keys.
"""

from __future__ import annotations

import json
import logging

import pytest
from conftest import open_channel
from kernel_ws import KernelWS
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_walnut.keys import KeyPair
from jupyter_walnut.provider_client import ProviderClient
from jupyter_walnut.signed_requests import sign_request

pytestmark = pytest.mark.asyncio


class Responses:
    """Every response body the attacks got back, to search for secrets afterwards."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    async def fetch(self, url: str, method: str = "GET", headers=None, body=None):
        if method in ("POST", "PUT") and body is None:
            body = b""
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(url, method=method, headers=headers or {}, body=body,
                        allow_nonstandard_methods=True, request_timeout=30),
            raise_error=False)
        self.bodies.append((resp.body or b"").decode(errors="replace"))
        return resp

    async def ws_refused(self, url: str, headers=None) -> int:
        try:
            conn = await websocket_connect(HTTPRequest(url, headers=headers or {},
                                                       request_timeout=30))
        except HTTPClientError as exc:
            self.bodies.append((exc.response.body or b"").decode(errors="replace")
                               if exc.response is not None else "")
            return exc.code
        conn.close()
        return 101


async def running_session(provider, key):
    client = ProviderClient(provider.url, key)
    created = await client.create_session(image="python",
                                          channel_id=open_channel(provider.ledger, key, provider))
    await client.wait_running(created["id"])
    kernel = await client.gateway(created["id"], created["access_token"], "POST",
                                  "api/kernels", {"name": "python3"})
    return client, created, kernel


def secrets_of(provider, *keys: KeyPair, created=()) -> dict[str, str]:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

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


async def test_signature_replayed_to_another_path_method_or_body_is_refused(provider):
    alice = KeyPair.generate()
    client, created, _ = await running_session(provider, alice)
    sid = created["id"]
    seen = Responses()
    url = provider.url
    # one genuine request, captured on the wire
    path = f"/api/v1/sessions/{sid}"
    audience = provider.identity.address  # plain HTTP: the provider's address
    headers = sign_request(alice, "GET", path, audience=audience)
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
    assert replay.code == 401 and b"replayed" in replay.body
    # a signature with a fresh nonce but an old timestamp is refused too
    stale = sign_request(alice, "GET", path, audience=audience,
                         now=__import__("time").time() - 3600)
    assert (await seen.fetch(url + path, "GET", stale)).code == 401
    # the session was never touched by any of it
    assert (await client.get_session(sid))["status"] == "running"
    assert len(provider.store.list()) == 1
    leaks = [name for name, value in secrets_of(provider, alice, created=[created]).items()
             for body in seen.bodies if value in body]
    assert not leaks


async def test_one_sessions_token_does_not_open_another_sessions_gateway(provider):
    alice, bob = KeyPair.generate(), KeyPair.generate()
    a_client, a, a_kernel = await running_session(provider, alice)
    _, b, b_kernel = await running_session(provider, bob)
    seen = Responses()
    ws_base = provider.url.replace("http", "ws", 1)
    with_b_token = {"Authorization": f"token {b['access_token']}"}
    # bob's token on alice's session: REST and websocket, alice's kernel id or bob's own
    for kernel_id in (a_kernel["id"], b_kernel["id"]):
        code = await seen.ws_refused(
            f"{ws_base}/api/v1/sessions/{a['id']}/gateway/api/kernels/{kernel_id}/channels",
            with_b_token)
        assert code == 403, kernel_id
    resp = await seen.fetch(f"{provider.url}/api/v1/sessions/{a['id']}/gateway/api/kernelspecs",
                            headers=with_b_token)
    assert resp.code == 403
    # bob's token through bob's own session cannot reach alice's kernel either: each
    # session is its own gateway, alice's kernel id is unknown there
    code = await seen.ws_refused(
        f"{ws_base}/api/v1/sessions/{b['id']}/gateway/api/kernels/{a_kernel['id']}/channels",
        with_b_token)
    assert code == 404
    # alice's session is unharmed
    ws = KernelWS(await a_client.kernel_websocket(a["id"], a["access_token"], a_kernel["id"]))
    assert (await ws.execute("print('mine')")).stdout == "mine\n"
    ws.conn.close()
    leaks = [name for name, value in
             secrets_of(provider, alice, bob, created=[a, b]).items()
             for body in seen.bodies if value in body]
    assert not leaks, leaks


async def test_token_in_the_url_query_is_not_accepted(provider):
    alice = KeyPair.generate()
    _, created, kernel = await running_session(provider, alice)
    sid, token = created["id"], created["access_token"]
    seen = Responses()
    base = f"{provider.url}/api/v1/sessions/{sid}/gateway"
    ws_base = base.replace("http", "ws", 1)
    for query in (f"token={token}", f"access_token={token}", f"session_token={token}"):
        resp = await seen.fetch(f"{base}/api/kernelspecs?{query}")
        assert resp.code == 401, (query, resp.code)
        code = await seen.ws_refused(f"{ws_base}/api/kernels/{kernel['id']}/channels?{query}")
        assert code == 401, (query, code)
        # nor in a cookie, nor under another header name
    for headers in ({"Cookie": f"token={token}"}, {"X-Walnut-Session": token},
                    {"Authorization": f"Basic {token}"}, {"Authorization": token}):
        assert (await seen.fetch(f"{base}/api/kernelspecs", headers=headers)).code == 401, headers
    # the header form works (control)
    ok = await seen.fetch(f"{base}/api/kernelspecs", headers={"Authorization": f"token {token}"})
    assert ok.code == 200


async def test_session_tokens_never_reach_the_provider_logs(provider, caplog):
    """A whole session's life, the token used the right way, through REST and websocket,
    and wrong ways; nothing the provider logs (any logger, any level) names a token."""
    caplog.set_level(logging.DEBUG)
    alice, bob = KeyPair.generate(), KeyPair.generate()
    a_client, a, kernel = await running_session(provider, alice)
    _, b, _ = await running_session(provider, bob)
    sid, token = a["id"], a["access_token"]
    seen = Responses()
    ws = KernelWS(await a_client.kernel_websocket(sid, token, kernel["id"]))
    assert (await ws.execute("print(1 + 1)")).stdout == "2\n"
    ws.conn.close()
    base = f"{provider.url}/api/v1/sessions/{sid}/gateway"
    b_auth = {"Authorization": f"token {b['access_token']}"}
    await seen.fetch(f"{base}/api/kernelspecs", headers=b_auth)
    await seen.fetch(f"{base}/api/kernelspecs", headers={"Authorization": "token wrong-" + token})
    await seen.fetch(f"{base}/api/nope", headers={"Authorization": f"token {token}"})
    await a_client.stop_session(sid)
    await seen.fetch(f"{base}/api/kernelspecs", headers={"Authorization": f"token {token}"})  # 409
    secrets = secrets_of(provider, alice, bob, created=[a, b])
    text = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records)
    # and what the gateway processes wrote to their log files on the provider
    for path in (provider.state_dir / "sessions").rglob("gateway.log"):
        text += "\n" + path.read_text(errors="replace")
    assert len(caplog.records) > 5  # the provider did log the session's life
    leaks = [name for name, value in secrets.items() if value in text]
    assert not leaks, leaks
    body_leaks = [name for name, value in secrets.items() for body in seen.bodies
                  if value in body]
    assert not body_leaks, body_leaks


async def test_a_token_wrongly_sent_in_the_url_is_not_logged(provider, caplog):
    caplog.set_level(logging.DEBUG)
    alice = KeyPair.generate()
    _, created, _ = await running_session(provider, alice)
    token = created["access_token"]
    url = f"{provider.url}/api/v1/sessions/{created['id']}/gateway/api/kernels?token={token}"
    resp = await AsyncHTTPClient().fetch(url, raise_error=False)
    assert resp.code == 401
    assert not [r for r in caplog.records if token in r.getMessage()]
