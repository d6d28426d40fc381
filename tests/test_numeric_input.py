"""Numbers from outside, against the real stack: every numeric field of the renter's
/walnut/ REST API and of the provider's API (Docker + TLS, pinned, signed requests), and
the CLIs' numeric flags. Each malformed number is a 400 (or a usage error) that names the
field, and nothing changes: no session, no channel, balances identical to the MIST.

`str.isdigit()` is True for "²" and int() reads "١٢" and " 12": none of them is a number a
renter typed on purpose, and none may reach a 500 or move money.
"""

from __future__ import annotations

import importlib
import json
from urllib.parse import quote

import pytest
from conftest import open_channel
from stack import StackNode
from tornado import httpclient
from tornado.websocket import websocket_connect

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.protocol import RESUME_SUBPROTOCOL
from jupyter_walnut.common.signed_requests import HEADER_TS, sign_request
from jupyter_walnut.common.tls import pinned_context

pytestmark = pytest.mark.timeout(300)

FUNDS = 10**12
# raw JSON literals: what a hostile or careless client can put in a numeric field
BAD_NUMBERS = {
    "superscript two": json.dumps("²"),
    "arabic-indic digits": json.dumps("١٢"),
    "exponent text": json.dumps("1e3"),
    "exponent number": "1e3",
    "fraction": "1.5",
    "bool": "true",
    "negative": "-1",
    "2**64": str(2**64),
    "5000 digits": "9" * 5000,
    "5000 digit text": json.dumps("9" * 5000),
    "leading space": json.dumps(" 12"),
    "hex": json.dumps("0x10"),
    "empty text": json.dumps(""),
    "object": '{"n": 1}',
}


def body_with(base: dict, field: str, raw: str) -> bytes:
    """`base` as JSON with `field` set to the raw literal (json.dumps cannot write some)."""
    text = json.dumps({**base, field: "__NUMBER__"})
    return text.replace('"__NUMBER__"', raw).encode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp("numbers")
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        node = StackNode(tmp / "provider", ledger)
        try:
            yield node
        finally:
            node.stop()


# --- the provider's API ---------------------------------------------------------------

SID = "s-0123456789abcdef"
PROVIDER_FIELDS = [  # (path, base body, field, the name the error must carry)
    ("/api/v1/sessions", {"image": "python"}, "gpus", "gpus"),
    ("/api/v1/sessions", {"image": "python"}, "cpus", "cpus"),
    ("/api/v1/sessions", {"image": "python"}, "memory_mb", "memory_mb"),
    ("/api/v1/sessions", {"image": "python"}, "max_seconds", "max_seconds"),
    (f"/api/v1/sessions/{SID}/vouchers", {"signature": "00" * 64}, "amount_mist",
     "amount_mist"),
    (f"/api/v1/sessions/{SID}/jobs", {"kind": "script", "entry": "a.py",
                                      "files": {"a.py": "cHJpbnQoMSk="}}, "attempt", "attempt"),
    (f"/api/v1/sessions/{SID}/jobs", {"kind": "script", "entry": "a.py",
                                      "files": {"a.py": "cHJpbnQoMSk="}}, "cell_timeout_s",
     "cell_timeout_s"),
]


async def signed_post(stack: StackNode, key: KeyPair, path: str, body: bytes,
                      headers: dict | None = None) -> tuple[int, str]:
    signed = sign_request(key, "POST", path, body, audience=stack.fingerprint or
                          stack.identity.address)
    resp = await httpclient.AsyncHTTPClient().fetch(httpclient.HTTPRequest(
        stack.url + path, method="POST", body=body,
        headers={**signed, "Content-Type": "application/json", **(headers or {})},
        ssl_options=pinned_context(stack.url, stack.fingerprint)), raise_error=False)
    return resp.code, json.loads(resp.body)["error"]["message"] if resp.code >= 400 else ""


@pytest.mark.asyncio
@pytest.mark.parametrize("path,base,field,name", PROVIDER_FIELDS,
                         ids=[f"{p.rsplit('/', 1)[-1]}.{f}" for p, _, f, _ in PROVIDER_FIELDS])
async def test_provider_api_refuses_malformed_numbers(stack, path, base, field, name):
    key = KeyPair.generate()
    stack.ledger.fund(key.address, FUNDS)
    before = stack.ledger.balance(key.address)
    for label, raw in BAD_NUMBERS.items():
        code, message = await signed_post(stack, key, path, body_with(base, field, raw))
        assert code == 400, (label, code, message)
        assert name in message, (label, message)
    assert stack.store.list(key.address) == []  # nothing created
    assert stack.ledger.balance(key.address) == before
    assert stack.ledger.channels(renter=key.address) == []


@pytest.mark.asyncio
async def test_provider_job_voucher_amounts_are_checked(stack):
    key = KeyPair.generate()
    base = {"kind": "script", "entry": "a.py", "files": {"a.py": "cHJpbnQoMSk="}}
    for label, raw in BAD_NUMBERS.items():
        body = json.dumps({**base, "vouchers": [{"amount_mist": "__N__",
                                                  "signature": "00" * 64}]}).replace(
            '"__N__"', raw).encode()
        code, message = await signed_post(stack, key, f"/api/v1/sessions/{SID}/jobs", body)
        assert code == 400 and "amount_mist" in message, (label, code, message)


@pytest.mark.asyncio
async def test_a_signature_timestamp_in_other_digits_is_refused_not_a_crash(stack):
    key = KeyPair.generate()
    for value in ("²", "¹²³", "0x6553f100", "1e9", "+1700000000", "9" * 5000):
        code, message = await signed_post(stack, key, "/api/v1/sessions", b'{"image":"x"}',
                                          headers={HEADER_TS: value})
        assert code == 401 and HEADER_TS in message, (value, code, message)


@pytest.mark.asyncio
async def test_a_kernel_link_ack_in_other_digits_is_refused(stack):
    """walnut_ack (the renter's replay position on a resumable kernel link) of a running
    session: only ASCII digits; "١٢" used to read as 12."""
    key = KeyPair.generate()
    client = stack.client(key)
    created = await client.create_session(image="python",
                                          channel_id=open_channel(stack.ledger, key, stack))
    try:
        await client.wait_running(created["id"])
        base = client.gateway_base(created["id"]).replace("http", "ws", 1)
        for value in ("١٢", "²", "-1", "1e3", " 1", str(2**64), "9" * 5000):
            url = (f"{base}/api/kernels/k1/channels?session_id={'ab' * 16}"
                   f"&walnut_ack={quote(value)}")
            request = httpclient.HTTPRequest(
                url, headers={**client.gateway_headers(created["access_token"]),
                              "Sec-WebSocket-Protocol": RESUME_SUBPROTOCOL},
                ssl_options=pinned_context(stack.url, stack.fingerprint))
            with pytest.raises(httpclient.HTTPClientError) as err:
                (await websocket_connect(request)).close()
            assert err.value.code == 400, value
            assert b"walnut_ack" in err.value.response.body, value
    finally:
        await client.stop_session(created["id"])


# --- the renter's /walnut/ API -----------------------------------------------------------

@pytest.fixture
def renter_home(tmp_path, stack):
    home = tmp_path / "renter"
    key = KeyPair.generate()
    key.save(home / "wallet.key")
    stack.ledger.fund(key.address, FUNDS)
    return home


@pytest.fixture
def jp_server_config(stack, renter_home, tmp_path):
    (tmp_path / "nb.ipynb").write_text("{}")
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True},
                          "root_dir": str(tmp_path)},
            "WalnutApp": {"providers": [stack.pinned_url], "walnut_home": str(renter_home),
                          "ledger_path": str(stack.ledger.path), "poll_interval": 3600}}


def renter_fields(stack: StackNode) -> list[tuple[tuple[str, ...], dict, str]]:
    launch = {"provider_url": stack.pinned_url, "shape": "cpu-small"}
    job = {"path": "nb.ipynb", "budget_mist": 100_000}
    return [
        (("walnut", "sessions"), launch, "budget_mist"),
        (("walnut", "sessions"), launch, "max_seconds"),
        (("walnut", "wallet", "fund"), {}, "amount_mist"),
        (("walnut", "sessions", SID, "topup"), {}, "amount_mist"),
        (("walnut", "jobs"), job, "budget_mist"),
        (("walnut", "jobs"), job, "max_retries"),
        (("walnut", "jobs"), job, "redundancy"),
    ]


async def test_renter_api_refuses_malformed_numbers(jp_fetch, jp_serverapp, stack):
    manager = jp_serverapp.web_app.settings["walnut_manager"]
    before = stack.ledger.balance(manager.key.address)
    provider_sessions = len(stack.store.list())
    for path, base, field in renter_fields(stack):
        for label, raw in BAD_NUMBERS.items():
            with pytest.raises(httpclient.HTTPClientError) as err:
                await jp_fetch(*path, method="POST", body=body_with(base, field, raw))
            message = json.loads(err.value.response.body)["message"]
            assert err.value.code == 400, (path, field, label, err.value.code, message)
            assert field in message, (path, field, label, message)
    assert manager.store.list() == []
    assert stack.ledger.balance(manager.key.address) == before
    assert stack.ledger.channels(renter=manager.key.address) == []
    assert len(stack.store.list()) == provider_sessions
    # control: well-formed numbers on the same endpoint are accepted
    resp = await jp_fetch("walnut", "wallet", "fund", method="POST",
                          body=json.dumps({"amount_mist": "1000"}))
    assert json.loads(resp.body)["balance_mist"] == before + 1000


# --- the command lines --------------------------------------------------------------------

CLI_CASES = [  # (main, argv before the number, the flag)
    ("jupyter_walnut.renter.cli", ["wallet", "fund", "--mist"], "--mist"),
    ("jupyter_walnut.provider.cli", ["init", "--port"], "--port"),
    ("jupyter_walnut.provider.cli", ["serve", "--port"], "--port"),
    ("jupyter_walnut.provider.cli", ["benchmark", "--seconds"], "--seconds"),
    ("jupyter_walnut.provider.cli", ["claim", "--channel", "0x1", "--signature", "00",
                                     "--amount-mist"], "--amount-mist"),
    ("jupyter_walnut.provider.cli", ["register", "--endpoint", "https://x",
                                     "--tls-fingerprint", "00" * 32,
                                     "--price-per-second-mist"], "--price-per-second-mist"),
]


@pytest.mark.parametrize("module,argv,flag", CLI_CASES, ids=[" ".join(c[1][:1]) + c[2]
                                                            for c in CLI_CASES])
def test_cli_numeric_flags_refuse_malformed_numbers(module, argv, flag, tmp_path, capsys,
                                                    monkeypatch):
    monkeypatch.setenv("WALNUT_HOME", str(tmp_path / "walnut"))
    monkeypatch.setenv("WALNUT_PROVIDER_HOME", str(tmp_path / "provider"))
    main = importlib.import_module(module).main
    values = ["²", "١٢", "1e3", "1.5", "-1", str(2**64), "9" * 5000, " 12", "0x10", "1.²"]
    if flag == "--seconds":  # a duration, not an amount: decimals are fine, the rest is not
        values.remove("1.5")
    for value in values:
        with pytest.raises(SystemExit) as exit_:
            main([*argv, value])
        assert exit_.value.code == 2, value  # argparse's usage error, before anything runs
        assert flag in capsys.readouterr().err, value
    assert not (tmp_path / "walnut").exists() and not (tmp_path / "provider").exists()


def test_a_sui_amount_in_other_digits_is_refused(tmp_path, capsys, monkeypatch):
    main = importlib.import_module("jupyter_walnut.renter.cli").main
    monkeypatch.setenv("WALNUT_HOME", str(tmp_path / "walnut"))
    ledger = tmp_path / "ledger.sqlite"
    for value in ("²", "١٢", "1.²", "1e3", "0x10", "-1", "9" * 5000):
        assert main(["wallet", "--ledger", str(ledger), "fund", value]) == 1, value
        assert "amount of SUI" in capsys.readouterr().err, value
