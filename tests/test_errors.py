"""One error path per HTTP app (issue #14), on the default stack: the renter's real Jupyter
Server (its /walnut/ API) and a real provider node (Docker sessions, TLS with a pinned
certificate). Whatever WalnutError a handler raises reaches the client as its status and
message, in the app's one shape; a ledger refusal answers the status of the ledger's table;
anything unexpected is a bare 500 that shows no traceback and no detail.

Each app gets one extra handler, a subclass of its real base handler, that raises the error
named in its path: the path the error takes from there to the client is the app's own.
"""

from __future__ import annotations

import json
import socket

import pytest
from stack import StackNode, renter_server_config
from tornado import httpclient, web

from jupyter_walnut.common import errors
from jupyter_walnut.common.errors import StatusError, WalnutError
from jupyter_walnut.common.gateway import ProviderAPIError
from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.numbers import NumberError
from jupyter_walnut.common.signed_requests import SignatureError, sign_request
from jupyter_walnut.common.sqlite_store import StorageError
from jupyter_walnut.common.tls import pinned_context
from jupyter_walnut.ledger import ABORT_CODES, HTTP_STATUS, LedgerError, LocalLedger
from jupyter_walnut.provider.app import STORAGE_ANSWERS, BaseHandler
from jupyter_walnut.provider.sessions import SessionError
from jupyter_walnut.provider.settlement import PaymentError
from jupyter_walnut.renter.errors import RenterError
from jupyter_walnut.renter.extension.handlers import WalnutHandler
from jupyter_walnut.renter.jobs.manager import JobManager
from jupyter_walnut.renter.manager import RenterManager

pytestmark = pytest.mark.timeout(300)

SECRET = "/var/lib/walnut/secret-token-1234"  # what an unexpected failure must not show

# every class of the hierarchy with a status of its own, and each role's errors
NAMED = [cls for cls in vars(errors).values() if isinstance(cls, type)
         and issubclass(cls, WalnutError) and cls not in (WalnutError, StatusError)]
CASES: dict[str, tuple] = {  # name: (the error a handler raises, the status the client sees)
    **{cls.__name__: (lambda cls=cls: cls(f"{cls.__name__}: the caller reads this"),
                      cls.status) for cls in NAMED},
    "WalnutError-status": (lambda: WalnutError("a status picked where raised", status=418),
                           418),
    "RenterError": (lambda: RenterError(409, "session s-1 is stopped"), 409),
    "SessionError": (lambda: SessionError(409, "node is at capacity (3 sessions)"), 409),
    "PaymentError": (lambda: PaymentError(402, "the channel pays another provider"), 402),
    "StorageError": (lambda: StorageError(507, "no space left on the disk"), 507),
    "NumberError": (lambda: NumberError("amount_mist", "must be a positive integer"), 400),
    "SignatureError": (lambda: SignatureError("request signature is not valid"), 401),
    # a provider's answer relayed: its 4xx stays, anything else is the other side's failure
    "ProviderAPIError-404": (lambda: ProviderAPIError(404, "no session s-1"), 404),
    "ProviderAPIError-500": (lambda: ProviderAPIError(500, "internal error"), 502),
    "ProviderAPIError-0": (lambda: ProviderAPIError(0, "provider unreachable"), 502),
    **{f"LedgerError-{code}": (lambda code=code: LedgerError(code, f"refused ({code})"),
                               HTTP_STATUS[code]) for code in ABORT_CODES},
}


def expected_message(name: str) -> str:
    return CASES[name][0]().message


def raise_named(name: str) -> None:
    if name == "unexpected":
        raise RuntimeError(f"bug: could not open {SECRET}")
    raise CASES[name][0]()


class RenterRaising(WalnutHandler):
    @web.authenticated
    def get(self, name: str) -> None:
        raise_named(name)


class ProviderRaising(BaseHandler):
    def get(self, name: str) -> None:
        raise_named(name)


def test_the_ledger_table_covers_every_code_and_says_who_can_fix_it():
    assert set(HTTP_STATUS) == set(ABORT_CODES)
    assert {code: LedgerError(code, "x").status for code in ABORT_CODES} == HTTP_STATUS
    # money missing, a channel's state, something unknown, the ledger itself
    assert HTTP_STATUS["E_INSUFFICIENT_FUNDS"] == HTTP_STATUS["E_DEPOSIT_EXHAUSTED"] == 402
    assert HTTP_STATUS["E_CHANNEL_CLOSED"] == HTTP_STATUS["E_CHANNEL_CLOSING"] == 409
    assert HTTP_STATUS["E_UNKNOWN_CHANNEL"] == 404
    assert HTTP_STATUS["E_INVALID_ARGUMENT"] == HTTP_STATUS["E_ZERO_AMOUNT"] == 400
    assert HTTP_STATUS["E_NODE"] == 503
    err = LedgerError("E_NODE", "the local ledger is unavailable")
    assert (err.message, str(err)) == ("the local ledger is unavailable",
                                       "E_NODE: the local ledger is unavailable")


# --- the provider --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errors")
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        node = StackNode(tmp / "provider", ledger)

        async def add_route() -> None:
            node.node.server.request_callback.add_handlers(
                r".*$", [(r"/test/raise/([\w-]+)", ProviderRaising)])

        node.run(add_route())
        try:
            yield node
        finally:
            node.stop()


async def provider_fetch(stack: StackNode, path: str, *, method: str = "GET",
                         body: bytes | None = None,
                         headers: dict | None = None) -> httpclient.HTTPResponse:
    return await httpclient.AsyncHTTPClient().fetch(httpclient.HTTPRequest(
        stack.url + path, method=method, body=body, headers=headers,
        ssl_options=pinned_context(stack.url, stack.fingerprint)), raise_error=False)


@pytest.mark.asyncio
async def test_the_provider_answers_each_error_with_its_status_and_message(stack):
    for name, (_, status) in CASES.items():
        resp = await provider_fetch(stack, f"/test/raise/{name}")
        assert resp.code == status, name
        assert resp.headers["Content-Type"] == "application/json"
        # a failure to write the node's own state names its paths: the renter reads less
        message = STORAGE_ANSWERS[status] if name == "StorageError" else expected_message(name)
        assert json.loads(resp.body) == {"error": {"status": status, "message": message}}, name


@pytest.mark.asyncio
async def test_an_unexpected_provider_failure_is_a_bare_500(stack):
    resp = await provider_fetch(stack, "/test/raise/unexpected")
    assert resp.code == 500
    assert json.loads(resp.body) == {"error": {"status": 500, "message": "internal error"}}
    assert b"Traceback" not in resp.body and b"secret" not in resp.body


@pytest.mark.asyncio
async def test_the_provider_real_refusals_take_the_same_path(stack):
    unsigned = await provider_fetch(stack, "/api/v1/sessions")
    assert unsigned.code == 401
    assert json.loads(unsigned.body)["error"]["status"] == 401
    missing = await provider_fetch(stack, "/api/v1/no-such-thing")
    assert json.loads(missing.body) == {"error": {
        "status": 404, "message": "no such endpoint: GET /api/v1/no-such-thing"}}
    # the ledger knows no such channel (its table: 404); a channel that cannot pay is 402
    key = KeyPair.generate()
    body = json.dumps({"image": "python", "channel_id": "0x" + "ab" * 32}).encode()
    signed = sign_request(key, "POST", "/api/v1/sessions", body,
                          audience=stack.fingerprint or stack.identity.address)
    refused = await provider_fetch(stack, "/api/v1/sessions", method="POST", body=body,
                                   headers={**signed, "Content-Type": "application/json"})
    error = json.loads(refused.body)["error"]
    assert (refused.code, error["status"]) == (402, 402)
    assert "no channel" in error["message"]
    assert stack.store.list() == []


# --- the renter ----------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: connections are refused


DOWN = f"http://127.0.0.1:{closed_port()}"


@pytest.fixture
def jp_server_config(stack, tmp_path):
    return renter_server_config(tmp_path / "renter", stack.ledger.path,
                                [stack.pinned_url, DOWN], poll_interval=3600)


@pytest.fixture
def renter_route(jp_serverapp):
    jp_serverapp.web_app.add_handlers(r".*$", [(
        jp_serverapp.base_url.rstrip("/") + r"/walnut-test/raise/([\w-]+)", RenterRaising)])


async def renter_error(jp_fetch, *path: str, **kwargs) -> tuple[int, dict]:
    with pytest.raises(httpclient.HTTPClientError) as err:
        await jp_fetch(*path, **kwargs)
    return err.value.code, json.loads(err.value.response.body)


async def test_the_renter_answers_each_error_with_its_status_and_message(jp_fetch,
                                                                         renter_route):
    for name, (_, status) in CASES.items():
        code, body = await renter_error(jp_fetch, "walnut-test", "raise", name)
        assert code == status, name
        assert body == {"message": expected_message(name), "status": status}, name


async def test_an_unexpected_renter_failure_is_a_bare_500(jp_fetch, renter_route):
    with pytest.raises(httpclient.HTTPClientError) as err:
        await jp_fetch("walnut-test", "raise", "unexpected")
    assert err.value.code == 500
    assert json.loads(err.value.response.body) == {
        "message": "internal error in jupyter-walnut (see the server log)", "status": 500}
    assert b"Traceback" not in err.value.response.body
    assert b"secret" not in err.value.response.body


async def test_the_renter_real_refusals_take_the_same_path(jp_fetch, jp_serverapp, stack):
    manager = jp_serverapp.web_app.settings["walnut_manager"]
    funds = stack.ledger.balance(manager.key.address)
    code, body = await renter_error(jp_fetch, "walnut", "sessions", method="POST",
                                    body="{not json")
    assert (code, body) == (400, {"message": "request body is not valid JSON", "status": 400})
    code, body = await renter_error(jp_fetch, "walnut", "sessions", "s-0123456789abcdef")
    assert (code, body["status"]) == (404, 404)
    code, body = await renter_error(jp_fetch, "walnut", "jobs", "job-0123456789ab")
    assert (code, body) == (404, {"message": "no job 'job-0123456789ab'", "status": 404})
    # the ledger refuses a deposit beyond the wallet: E_INSUFFICIENT_FUNDS, 402 by its table
    code, body = await renter_error(jp_fetch, "walnut", "sessions", method="POST",
                                    body=json.dumps({"provider_url": stack.pinned_url,
                                                     "shape": "cpu-small",
                                                     "budget_mist": funds * 10}))
    assert (code, body["status"]) == (402, 402)
    assert body["message"] == (f"insufficient balance: the deposit is {funds * 10} MIST, "
                               f"the wallet holds {funds} MIST")
    # a provider that cannot be reached is the other side's failure
    code, body = await renter_error(jp_fetch, "walnut", "sessions", method="POST",
                                    body=json.dumps({"provider_url": DOWN,
                                                     "shape": "cpu-small"}))
    assert (code, body["status"]) == (502, 502)
    assert body["message"].startswith("provider unreachable")
    # none of them moved money or left a session behind
    assert stack.ledger.balance(manager.key.address) == funds
    assert stack.ledger.channels(renter=manager.key.address) == []
    assert manager.store.list() == [] and stack.store.list() == []


@pytest.mark.asyncio
async def test_a_job_the_ledger_refuses_fails_with_its_message_and_is_not_retried(stack,
                                                                                  tmp_path):
    key = KeyPair.generate()
    stack.ledger.fund(key.address, 100_000)
    renter = RenterManager(tmp_path / "renter", [stack.pinned_url], key=key,
                           ledger=stack.ledger)
    script = tmp_path / "job.py"
    script.write_text("print(1)\n")
    jobs = JobManager(renter)
    job = jobs.create(script, budget_mist=10**9, max_retries=2)
    job = await jobs.start(job["id"])
    assert job["status"] == "failed"
    [attempt] = job["attempts"]  # money is missing everywhere: no other provider is tried
    assert attempt["error"] == ("could not start: insufficient balance: the deposit is "
                                "1000000000 MIST, the wallet holds 100000 MIST")
    assert stack.ledger.balance(key.address) == 100_000
    assert stack.ledger.channels(renter=key.address) == []
