"""Bad input at scale against the default stack (Docker runtime, TLS) on loopback.

1. Schemathesis drives every operation of the shipped OpenAPI document (the job API too)
   with inputs that fit the schema and inputs that do not, unsigned and SIGNED by a renter
   key for the node's audience (so bodies get past the signature check and reach the
   handlers; session-scoped paths use the renter's real session half the time): a floor of
   requests per operation, no 5xx, every 4xx a JSON error with its status and a message,
   responses conform where the document gives a schema, and fuzz creates and pays nothing.
2. Correctly SIGNED requests with fuzzed JSON bodies to POST /sessions, POST
   /sessions/<id>/vouchers and POST /sessions/<id>/jobs: always 4xx, nothing changes.
3. A renter sends arbitrary text and binary frames down a real session's kernel websocket:
   neither the provider nor the gateway falls over, the session still executes code.

`WALNUT_TEST_RUNTIME=process` / `WALNUT_TEST_TLS=off` run the same tests on the cheap leg.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from importlib import resources

import pytest
import requests
import yaml
from conftest import open_channel, provider_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from kernel_ws import KernelWS
from stack import StackNode, stack_runtime
from tornado.websocket import WebSocketClosedError

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.signed_requests import sign_request
from jupyter_walnut.ledger import LocalLedger
from jupyter_walnut.ledger.vouchers import Voucher
from jupyter_walnut.provider.jobs import service
from jupyter_walnut.provider.routes import make_app

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.timeout(420)

PER_OPERATION = 30  # examples per operation and generation mode
PER_OPERATION_FLOOR = 15  # requests that must really reach the node, per operation
TOTAL_BUDGET_S = 150.0  # schemathesis stops sending after this, whatever is left
SIGNED_EXAMPLES = 150
IO = settings(deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
# paths whose session the fuzzing renter owns half the time (never DELETE: it would stop it)
REAL_SESSION_OPS = {("GET", "/api/v1/sessions/{session_id}"),
                    ("POST", "/api/v1/sessions/{session_id}/vouchers"),
                    ("POST", "/api/v1/sessions/{session_id}/topup"),
                    ("GET", "/api/v1/sessions/{session_id}/jobs"),
                    ("GET", "/api/v1/sessions/{session_id}/jobs/{job_id}"),
                    ("DELETE", "/api/v1/sessions/{session_id}/jobs/{job_id}"),
                    ("GET", "/api/v1/sessions/{session_id}/jobs/{job_id}/results")}


class Renter:
    """The fuzzing renter: a key with one running session of its own on the node."""

    def __init__(self, node: StackNode) -> None:
        self.key = KeyPair.generate()
        channel = open_channel(node.ledger, self.key, node, deposit=10**9)
        created = signed_post(node, self.key, "/api/v1/sessions",
                              json.dumps({"image": "python", "channel_id": channel}).encode())
        assert created.status_code == 201, created.text
        self.channel = channel
        self.sid = created.json()["id"]
        self.token = created.json()["access_token"]
        node.run(node.client(self.key).wait_running(self.sid))


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-api")
    with LocalLedger(tmp / "ledger.sqlite") as ledger:
        config = provider_config(provider={"name": "fuzz-node", "runtime": stack_runtime()},
                                 settlement={"grace_seconds": 3600})  # the renter pays little
        stack = StackNode(tmp / "provider", ledger, config=config)
        stack.audience = stack.fingerprint or stack.identity.address
        stack.verify = str(tmp / "provider" / "provider" / "cert.pem") if stack.tls else True
        try:
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def renter(node) -> Renter:
    return Renter(node)


def _schema():
    text = resources.files("jupyter_walnut.provider").joinpath("openapi.yaml").read_text()
    return schemathesis.openapi.from_dict(yaml.safe_load(text))


class SignedAuth(requests.auth.AuthBase):
    """Signs every prepared request as the renter would, so fuzz reaches past the 401."""

    def __init__(self, key: KeyPair, audience: str) -> None:
        self.key = key
        self.audience = audience  # the pinned fingerprint (TLS) or the provider's address

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        request.headers.update(sign_request(self.key, request.method, request.path_url, body,
                                            audience=self.audience))
        return request


def check_error_body(response: requests.Response) -> str | None:
    """What is wrong with a 4xx answer, or None: it must be JSON naming its status."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} without a JSON error: {response.text[:200]!r}"
    if error.get("status") != response.status_code or not isinstance(
            error.get("message"), str) or not error["message"]:
        return f"{response.status_code} with a bad error object: {error!r:.200}"
    return None


def test_the_document_names_every_route_of_the_node(node) -> None:
    """A route missing from openapi.yaml is never fuzzed: each route of the node's app
    matches a path of the document."""
    samples = {"session_id": "s-" + "0" * 16, "job_id": "j-" + "0" * 16,
               "path": "api/kernels/k/channels", "port": "8080"}
    documented = [op.ok().path.format(**samples) for op in _schema().get_all_operations()]
    routes = [rule.matcher.regex for rule in make_app(node.node).wildcard_router.rules]
    assert len(routes) >= 13
    missing = [r.pattern for r in routes if not any(r.fullmatch(p) for p in documented)]
    assert not missing, f"routes missing from openapi.yaml: {missing}"


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_schemathesis_every_operation_no_server_error(node, renter, signed: bool) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = _schema()
    http = requests.Session()
    http.verify = node.verify
    if signed:
        http.auth = SignedAuth(renter.key, node.audience)
    before = node.store.get(renter.sid).voucher_mist
    counts: dict[str, dict[int, int]] = {}
    failures: list[str] = []
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 26, "every documented operation is fuzzed"

    def fuzz(operation, mode, label: str, seen: dict[int, int]) -> None:
        own = signed and (operation.method.upper(), operation.path) in REAL_SESSION_OPS
        flip = iter(range(10**9))

        @settings(IO, max_examples=PER_OPERATION)
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case) -> None:
            if time.monotonic() - started > TOTAL_BUDGET_S:
                return
            if own and next(flip) % 2 and isinstance(case.path_parameters, dict):
                case.path_parameters["session_id"] = renter.sid
            response = case.call(base_url=node.url, session=http, timeout=15,
                                 verify=node.verify)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{label}: {response.status_code} {response.text[:200]} "
                                f"for {case.path_parameters} {case.body!r:.200}")
                return
            if 400 <= response.status_code < 500:
                problem = check_error_body(response)
                if problem:
                    failures.append(f"{label}: {problem}")
            try:
                case.validate_response(response, checks=[not_a_server_error,
                                                         response_schema_conformance])
            except AssertionError as exc:
                failures.append(f"{label}: {str(exc)[:300]}")

        try:
            run()
        except Unsatisfiable:
            # nothing to get wrong: an operation without parameters or body has no
            # negative cases
            assert mode == GenerationMode.NEGATIVE, label

    with_input: set[str] = set()  # one example is all an operation without input has
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        has_input = "{" in operation.path or operation.method.upper() in ("POST", "PUT")
        if has_input:
            with_input.add(label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode == GenerationMode.NEGATIVE and not has_input:
                continue  # nothing to get wrong without parameters or a body
            fuzz(operation, mode, label, counts.setdefault(label, {}))
    total = sum(sum(c.values()) for c in counts.values())
    print(f"\n[fuzz] schemathesis ({'signed' if signed else 'unsigned'}): {total} requests "
          f"in {time.monotonic() - started:.1f}s")
    for label, seen in counts.items():
        print(f"  {label:66s} {sum(seen.values()):4d}  {dict(sorted(seen.items()))}")
    assert not failures, "\n".join(failures[:20])
    short = {label: sum(seen.values()) for label, seen in counts.items()
             if sum(seen.values()) < (PER_OPERATION_FLOOR if label in with_input else 1)}
    assert not short, f"operations that got fewer than {PER_OPERATION_FLOOR} requests: {short}"
    if signed:  # the handlers were reached: not every answer is the signature's 401
        reached = {label for label, seen in counts.items() if set(seen) - {401}}
        assert reached == set(counts), set(counts) - reached
    # fuzz created and paid nothing: unsigned, it never gets past the signature check;
    # signed, the bodies name no open channel of this renter and no valid voucher
    assert [r.id for r in node.store.list()] == [renter.sid]
    assert node.store.get(renter.sid).status == "running"
    assert node.store.get(renter.sid).voucher_mist == before


# --- signed requests with fuzzed bodies ---------------------------------------------------

json_any = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=3),
    max_leaves=10)
session_keys = ["image", "shape", "gpus", "cpus", "memory_mb", "max_seconds", "channel_id"]
bodies = st.one_of(
    json_any.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={k: json_any for k in session_keys})
    .map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"image": st.sampled_from(["python", "nope"])},
                          optional={k: json_any | st.text(max_size=70) for k in session_keys[1:]})
    .map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
)


def signed_post(node, key: KeyPair, path: str, body: bytes) -> requests.Response:
    headers = {**sign_request(key, "POST", path, body, audience=node.audience),
               "Content-Type": "application/json"}
    return requests.post(node.url + path, data=body, headers=headers, timeout=15,
                         verify=node.verify)


def test_signed_session_requests_with_fuzzed_bodies_create_nothing(node) -> None:
    key = KeyPair.generate()
    seen: dict[int, int] = {}
    before = node.ledger.balance(key.address)
    sessions_before = len(node.store.list())

    @settings(IO, max_examples=SIGNED_EXAMPLES)
    @given(body=bodies)
    def run(body: bytes) -> None:
        response = signed_post(node, key, "/api/v1/sessions", body)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert 400 <= response.status_code < 500, (response.status_code, response.text, body)
        error = response.json()["error"]
        assert error["status"] == response.status_code and error["message"]
        assert len(node.store.list()) == sessions_before

    run()
    tried = sum(seen.values())
    print(f"\n[fuzz] signed POST /sessions: {tried} bodies, statuses {dict(sorted(seen.items()))}")
    assert tried >= 100
    assert node.ledger.balance(key.address) == before


def test_signed_voucher_posts_with_fuzzed_bodies_change_nothing(node, renter) -> None:
    key, channel, sid = renter.key, renter.channel, renter.sid
    sessions_before = len(node.store.list())
    path = f"/api/v1/sessions/{sid}/vouchers"
    good = Voucher.sign(key, channel, 5000)  # one genuine voucher first
    ok = signed_post(node, key, path, json.dumps(
        {"amount_mist": "5000", "signature": good.signature.hex()}).encode())
    assert ok.status_code == 200, ok.text
    def voucher() -> tuple:
        rec = node.store.get(sid)
        return rec.voucher_mist, rec.voucher_signature, rec.settlement

    kept = voucher()
    seen: dict[int, int] = {}
    voucher_bodies = st.one_of(
        bodies,
        st.fixed_dictionaries({}, optional={
            "amount_mist": st.one_of(json_any, st.integers(min_value=-10, max_value=2**66),
                                     st.integers(min_value=0, max_value=2**66).map(str)),
            "signature": st.one_of(json_any, st.binary(min_size=64, max_size=64).map(bytes.hex),
                                   st.just(good.signature.hex()),
                                   st.text("0123456789abcdefABCDEF", min_size=128,
                                           max_size=128))})
        .map(lambda v: json.dumps(v).encode()))

    @settings(IO, max_examples=SIGNED_EXAMPLES)
    @given(body=voucher_bodies)
    def run(body: bytes) -> None:
        response = signed_post(node, key, path, body)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert 400 <= response.status_code < 500, (response.status_code, response.text, body)
        assert voucher() == kept  # the voucher on record is unchanged

    run()
    tried = sum(seen.values())
    print(f"\n[fuzz] signed POST /vouchers: {tried} bodies, statuses {dict(sorted(seen.items()))}")
    assert tried >= 100
    assert len(node.store.list()) == sessions_before
    assert node.store.get(sid).voucher_mist == 5000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD_PATHS = [".", "./", "", "/etc/passwd", "../x", "a/../../x", ".walnut/job.json",
             "outputs/x", "a\\b", "a\0b"]
job_bodies = st.one_of(
    bodies,
    # a file path the job may not write (".": a 500 once)
    st.sampled_from(BAD_PATHS).flatmap(lambda path: st.fixed_dictionaries(
        {"kind": st.sampled_from(["notebook", "script"]), "entry": st.just(path),
         "files": st.just({path: b64(b"print(1)")})})),
    # everything right but one field of the wrong type or shape
    st.fixed_dictionaries(
        {"kind": st.just("script"), "files": st.just({"run.py": b64(b"print(1)")})},
        optional={"entry": json_any.filter(lambda v: v != "run.py")}),
    st.sampled_from([{"stop_session": 1}, {"stop_session": "no"}, {"name": ["x"]},
                     {"attempt": 0}, {"attempt": "1.5"}, {"cell_timeout_s": -1},
                     {"vouchers": "x"}, {"vouchers": [[1, "ab"]]}, {"surprise": 1}])
    .map(lambda bad: {"kind": "script", "entry": "run.py",
                      "files": {"run.py": b64(b"print(1)")}, **bad}),
    # a voucher ladder whose signature is 128 characters but not hex (passed once)
    st.text(min_size=128, max_size=128).filter(
        lambda t: any(c not in "0123456789abcdefABCDEF" for c in t)).map(
        lambda sig: {"kind": "script", "entry": "run.py", "files": {"run.py": b64(b"x = 1")},
                     "vouchers": [{"amount_mist": "5000", "signature": sig}]}),
).map(lambda v: v if isinstance(v, bytes) else json.dumps(v).encode())


def test_signed_job_submissions_with_bad_bodies_start_nothing(node, renter) -> None:
    """The renter's own running session: every bad submission is a JSON 4xx, no job starts."""
    path = f"/api/v1/sessions/{renter.sid}/jobs"
    jobs = service(node.node).store
    seen: dict[int, int] = {}

    @settings(IO, max_examples=SIGNED_EXAMPLES)
    @given(body=job_bodies)
    def run(body: bytes) -> None:
        response = signed_post(node, renter.key, path, body)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code == 400, (response.status_code, response.text, body)
        assert check_error_body(response) is None, response.text
        assert jobs.for_session(renter.sid) == []

    run()
    tried = sum(seen.values())
    print(f"\n[fuzz] signed POST /jobs: {tried} bodies, statuses {dict(sorted(seen.items()))}")
    assert tried >= 100
    assert node.store.get(renter.sid).status == "running"


# --- the kernel websocket through the gateway proxy ---------------------------------------

MSG_TYPES = ["execute_request", "kernel_info_request", "comm_open", "comm_msg", "input_reply",
             "shutdown_request", "interrupt_request", "bogus", ""]


def random_json(rng: random.Random, depth: int = 0):
    pick = rng.randrange(8 if depth < 3 else 5)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.randint(-2**70, 2**70)
    if pick == 3:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if pick == 4:
        return rng.random() * 1e9
    if pick == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["code", "msg_id", "msg_type", "channel", "content", "x", ""]):
            random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_frames(rng: random.Random, count: int) -> list[str | bytes]:
    """Arbitrary bytes and text, JSON of any shape, and messages that almost look right
    (shutdown_request excluded: a renter may of course stop their own kernel)."""
    frames: list[str | bytes] = []
    for _ in range(count):
        kind = rng.randrange(5)
        if kind == 0:
            frames.append(rng.randbytes(rng.randrange(2048)))
        elif kind == 1:
            frames.append("".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(300))))
        elif kind == 2:
            frames.append(json.dumps(random_json(rng)))
        else:
            msg_type = rng.choice([m for m in MSG_TYPES if m != "shutdown_request"])
            msg = {"header": {"msg_id": rng.randbytes(4).hex(), "msg_type": msg_type,
                              "session": "fuzz", "username": random_json(rng, 2),
                              "version": rng.choice(["5.3", "", "9"])},
                   "parent_header": random_json(rng, 2), "metadata": random_json(rng, 2),
                   "content": {k: random_json(rng, 2) for k in rng.sample(
                       ["code", "silent", "comm_id", "target_name", "data", "value"], 2)},
                   "channel": rng.choice(["shell", "control", "stdin", "iopub", "x", ""])}
            if kind == 4:
                msg["buffers"] = random_json(rng, 2)
                del msg[rng.choice(list(msg))]
            frames.append(json.dumps(msg))
    return frames


@pytest.mark.asyncio
async def test_arbitrary_websocket_frames_do_not_break_the_session(node, renter) -> None:
    client = node.client(renter.key)
    sid, token = renter.sid, renter.token
    kernel = await client.gateway(sid, token, "POST", "api/kernels", {"name": "python3"})

    # offset tables that claim billions of parts: jupyter_server itself would stall on
    # these (a gigabyte format string, an endless loop); the walnut gateway drops them
    batch = [b"", "", "\x00", b"\xff" * 9000, b"\x7f\xff\xff\xff", b"\xff" * 8,
             (2**62).to_bytes(8, "little"), b"L=r\xb7" + bytes(200), "{", "null", "[]", "{}",
             json.dumps({"channel": "shell", "header": None})]
    sent = {"text": 0, "binary": 0, "connections": 0}
    for subprotocols in (None, ["v1.kernel.websocket.jupyter.org"]):
        for seed in range(3):
            examples = random_frames(random.Random(seed), 40) if seed else batch
            conn = await client.kernel_websocket(sid, token, kernel["id"],
                                                 subprotocols=subprotocols)
            sent["connections"] += 1
            for frame in examples:
                try:
                    await conn.write_message(frame, binary=isinstance(frame, bytes))
                except WebSocketClosedError:
                    break  # the gateway may close a connection that sent garbage: fine
                sent["binary" if isinstance(frame, bytes) else "text"] += 1
            await asyncio.sleep(0.2)  # let the gateway chew on it
            conn.close()
    print(f"\n[fuzz] kernel websocket: {sent['text']} text + {sent['binary']} binary frames "
          f"over {sent['connections']} connections")
    assert sent["text"] + sent["binary"] >= 150
    # the provider answers, the session is still running, the kernel still executes code
    assert (await client.health())["status"] == "ok"
    assert (await client.get_session(sid))["status"] == "running"
    ws = KernelWS(await client.kernel_websocket(sid, token, kernel["id"]))
    assert (await ws.execute("print(6 * 7)")).stdout == "42\n"
    ws.conn.close()
