"""Bad input at scale: property-based tests on every parser that reads untrusted bytes.

Each parser gets arbitrary input and must either accept it or refuse it with its one
documented exception; never another exception type, never a crash, never a state change on
refusal. Every test counts the inputs it tried, prints the count and asserts a minimum.
"""

from __future__ import annotations

import json
import string
import time

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jupyter_walnut.common import jupyter_wire as wire
from jupyter_walnut.common.errors import WalnutError
from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.signed_requests import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIG,
    HEADER_TS,
    RequestVerifier,
    SignatureError,
    sign_request,
)
from jupyter_walnut.ledger import bcs
from jupyter_walnut.ledger.vouchers import (
    DOMAIN,
    MESSAGE_LENGTH,
    Voucher,
    parse_voucher_message,
    verify_voucher,
    voucher_message,
)
from jupyter_walnut.provider.config import ConfigError, load_config, parse_config
from jupyter_walnut.provider.sessions import SessionRequest

FAST = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
MIN_TRIED = 300  # every property below must have tried at least this many inputs

KEY = KeyPair.generate()
CHANNEL = "0x" + "ab" * 32


class Counter:
    def __init__(self) -> None:
        self.tried = 0
        self.accepted = 0

    def report(self, name: str, minimum: int = MIN_TRIED) -> None:
        print(f"\n[fuzz] {name}: {self.tried} inputs tried, {self.accepted} accepted")
        assert self.tried >= minimum, f"{name}: only {self.tried} inputs tried"


# --- vouchers -----------------------------------------------------------------------------


def voucher_like_bytes() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, plus near-misses: the right length, the right domain tag."""
    return st.one_of(
        st.binary(max_size=200),
        st.binary(min_size=MESSAGE_LENGTH - len(DOMAIN),
                  max_size=MESSAGE_LENGTH - len(DOMAIN)).map(lambda b: DOMAIN + b),
        st.binary(max_size=80).map(lambda b: DOMAIN + b),
        st.binary(min_size=MESSAGE_LENGTH, max_size=MESSAGE_LENGTH),
    )


def test_parse_voucher_message_on_arbitrary_bytes() -> None:
    count = Counter()

    @FAST
    @given(voucher_like_bytes())
    def check(data: bytes) -> None:
        count.tried += 1
        try:
            channel, amount = parse_voucher_message(data)
        except ValueError:
            return
        count.accepted += 1
        # whatever parses round-trips byte for byte
        assert 0 <= amount <= bcs.U64_MAX
        assert voucher_message(channel, amount) == data

    check()
    count.report("parse_voucher_message")
    assert count.accepted > 0  # the near-miss strategy reaches the accepting path


amounts = st.one_of(st.integers(), st.integers(min_value=0, max_value=bcs.U64_MAX),
                    st.sampled_from([0, 1, bcs.U64_MAX, bcs.U64_MAX + 1, -1, 2**53 + 1]),
                    st.booleans(), st.floats(allow_nan=True), st.text(max_size=5), st.none())
channels = st.one_of(st.text(max_size=80), st.binary(max_size=40),
                     st.from_regex(r"0x[0-9a-fA-F]{0,66}", fullmatch=True),
                     st.just(CHANNEL), st.binary(min_size=32, max_size=32))


def test_verify_voucher_with_arbitrary_keys_amounts_channels_and_signatures() -> None:
    count = Counter()
    good = Voucher.sign(KEY, CHANNEL, 12345)

    @FAST
    @given(public_key=st.one_of(st.binary(max_size=40), st.just(KEY.public_key)),
           channel=channels, amount=amounts,
           signature=st.one_of(st.binary(max_size=80), st.just(good.signature)))
    @example(public_key=KEY.public_key, channel=CHANNEL, amount=12345,
             signature=good.signature)
    def check(public_key, channel, amount, signature) -> None:
        count.tried += 1
        ok = verify_voucher(public_key, channel, amount, signature)  # never raises
        assert ok in (True, False)
        if ok:
            count.accepted += 1
            # only the exact signed statement verifies
            assert public_key == KEY.public_key and signature == good.signature
            assert bcs.normalize_address(channel) == CHANNEL and amount == 12345
            assert not isinstance(amount, bool)

    check()
    count.report("verify_voucher")
    assert count.accepted >= 1


def test_voucher_from_json_on_arbitrary_json() -> None:
    count = Counter()
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                    max_size=4),
        max_leaves=10)
    fields = st.fixed_dictionaries({}, optional={
        "channel_id": st.one_of(json_values, channels), "amount_mist": amounts | json_values,
        "signature": st.one_of(json_values, st.binary(max_size=70).map(bytes.hex))})

    @FAST
    @given(fields)
    def check(data) -> None:
        count.tried += 1
        try:
            voucher = Voucher.from_json(data)
        except ValueError:
            return
        count.accepted += 1
        assert 0 <= voucher.amount_mist <= bcs.U64_MAX
        assert voucher.verify(KEY.public_key) in (True, False)

    check()
    count.report("Voucher.from_json")


# --- signed-request headers ---------------------------------------------------------------

header_text = st.one_of(
    st.text(max_size=140),
    st.text(alphabet="0123456789abcdefABCDEF \t", max_size=140),
    st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{128}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    st.integers(min_value=-10**15, max_value=10**15).map(str),
    st.sampled_from(["", " ", "٣٤٥", "１２３", "1e9", "0x10", "-0", "+5"]),
)


def test_request_verifier_rejects_arbitrary_headers_without_state_change() -> None:
    count = Counter()
    verifier = RequestVerifier(window_s=60)
    now = 1_700_000_000.0

    @FAST
    @given(headers=st.fixed_dictionaries({}, optional={
        HEADER_KEY: header_text, HEADER_TS: header_text | st.just(str(int(now))),
        HEADER_NONCE: header_text, HEADER_SIG: header_text, "X-Other": header_text}),
        method=st.sampled_from(["GET", "POST", "DELETE", "get", "PÖST", ""]),
        path=st.text(max_size=60), body=st.binary(max_size=200))
    def check(headers, method, path, body) -> None:
        count.tried += 1
        before = len(verifier.replays._seen)
        try:
            verifier.verify(method, path, headers, body, now=now)
        except SignatureError as exc:
            assert len(verifier.replays._seen) == before  # a refusal records nothing
            assert str(exc)
            return
        count.accepted += 1

    check()
    count.report("RequestVerifier.verify (arbitrary headers)")
    assert count.accepted == 0  # nothing forged by chance passes


def test_signed_request_tampering_is_always_refused() -> None:
    """A genuine signature with any one part changed (method, path, body, timestamp) fails;
    the untouched request passes once and its replay is refused."""
    count = Counter()
    verifier = RequestVerifier(window_s=60)

    @FAST
    @given(path=st.text(min_size=1, max_size=60), body=st.binary(max_size=100),
           other_path=st.text(min_size=1, max_size=60), other_body=st.binary(max_size=100),
           skew=st.integers(min_value=-10**6, max_value=10**6))
    def check(path, body, other_path, other_body, skew) -> None:
        count.tried += 1
        now = time.time()
        headers = sign_request(KEY, "POST", path, body, now=now)
        if other_path != path:
            with pytest.raises(SignatureError):
                verifier.verify("POST", other_path, headers, body, now=now)
        if other_body != body:
            with pytest.raises(SignatureError):
                verifier.verify("POST", path, headers, other_body, now=now)
        with pytest.raises(SignatureError):
            verifier.verify("GET", path, headers, body, now=now)
        if abs(skew) > 60:
            with pytest.raises(SignatureError, match="window"):
                verifier.verify("POST", path, headers, body, now=now + skew)
        assert verifier.verify("POST", path, headers, body, now=now) == KEY.address
        count.accepted += 1
        with pytest.raises(SignatureError, match="replayed"):
            verifier.verify("POST", path, headers, body, now=now)

    check()
    count.report("RequestVerifier.verify (tampered genuine requests)")


# --- kernel wire: v1 websocket framing and ZMQ splitting ----------------------------------


def v1_like_frames() -> st.SearchStrategy[bytes]:
    def with_table(count: int, offsets: list[int], tail: bytes) -> bytes:
        return count.to_bytes(8, "little") + b"".join(
            (o % 2**64).to_bytes(8, "little") for o in offsets) + tail

    return st.one_of(
        st.binary(max_size=300),
        st.builds(with_table, st.integers(min_value=0, max_value=12),
                  st.lists(st.integers(min_value=0, max_value=400), max_size=12),
                  st.binary(max_size=200)),
        st.builds(with_table, st.integers(min_value=0, max_value=2**64 - 1),
                  st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=6),
                  st.binary(max_size=50)),
        st.builds(lambda ch, parts: wire.to_ws_v1(ch, parts), st.text(max_size=10),
                  st.lists(st.binary(max_size=30), max_size=6)),
    )


def test_from_ws_v1_on_arbitrary_bytes_raises_only_value_error() -> None:
    count = Counter()

    @settings(FAST, max_examples=1500)
    @given(v1_like_frames())
    def check(frame: bytes) -> None:
        count.tried += 1
        try:
            channel, parts = wire.from_ws_v1(frame)
        except ValueError:  # UnicodeDecodeError is a ValueError too
            return
        count.accepted += 1
        assert isinstance(channel, str)
        assert all(isinstance(p, bytes) for p in parts)

    check()
    count.report("wire.from_ws_v1", minimum=1000)
    assert count.accepted > 0


def test_v1_framing_round_trips() -> None:
    count = Counter()

    @FAST
    @given(st.text(max_size=20), st.lists(st.binary(max_size=50), max_size=8))
    def check(channel: str, parts: list[bytes]) -> None:
        count.tried += 1
        assert wire.from_ws_v1(wire.to_ws_v1(channel, parts)) == (channel, parts)
        count.accepted += 1

    check()
    count.report("wire.to_ws_v1/from_ws_v1 round trip")


def test_split_zmq_on_arbitrary_frames_raises_only_value_error() -> None:
    count = Counter()
    frame = st.one_of(st.binary(max_size=20), st.just(wire.DELIM), st.just(b"<IDS|MSG"))

    @settings(FAST, max_examples=1000)
    @given(st.lists(frame, max_size=12))
    def check(frames: list[bytes]) -> None:
        count.tried += 1
        try:
            ids, sig, parts = wire.split_zmq(frames)
        except ValueError:
            return
        count.accepted += 1
        assert len(parts) >= 4
        assert [*ids, wire.DELIM, sig, *parts] == frames
        assert wire.sign(b"k", parts)  # signing what was split never fails

    check()
    count.report("wire.split_zmq", minimum=800)
    assert count.accepted > 0


# --- provider.toml ------------------------------------------------------------------------

toml_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(), st.text(max_size=12),
                         st.sampled_from(["cpu-small", "python", "builtin", "off", "files",
                                          "self-signed", "process", "docker", "local",
                                          "127.0.0.1", "0.0.0.0", "http://x", "19:00",
                                          "24:00", "mon", "25:61"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)


def plausible_config() -> st.SearchStrategy[dict]:
    """Dicts shaped like provider.toml with arbitrary values in the known keys."""
    def maybe(keys: list[str]) -> st.SearchStrategy[dict]:
        return st.fixed_dictionaries({}, optional={k: toml_values for k in keys})

    shape = maybe(["name", "gpus", "cpus", "memory_mb", "price_per_second_mist", "extra"])
    good_shape = st.just({"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 512,
                          "price_per_second_mist": 10})
    window = maybe(["days", "start", "end"])
    avail = st.fixed_dictionaries({}, optional={
        "max_sessions": toml_scalars, "reserved_gpus": toml_values,
        "max_session_s": toml_scalars,
        "schedule": st.lists(window | toml_values, max_size=2)})
    return st.fixed_dictionaries({}, optional={
        "provider": maybe(["name", "endpoint", "region", "listen_host", "listen_port",
                           "runtime"]) | st.just({"name": "n"}) | toml_values,
        "shapes": st.lists(shape | good_shape | toml_scalars, max_size=3) | toml_values,
        "images": st.lists(maybe(["name", "reference", "description"])
                           | st.just({"name": "python", "reference": "builtin"}), max_size=2),
        "availability": avail | toml_values,
        "limits": maybe(["max_body_bytes", "signature_window_s"]),
        "tls": maybe(["mode", "cert", "key"]),
        "ledger": maybe(["kind", "path"]),
        "settlement": maybe(["grace_s", "min_prepaid_s", "min_challenge_period_s",
                             "settle_after_s"]),
        "bogus": toml_values,
    })


VALID_CONFIG = {
    "provider": {"name": "n", "runtime": "process", "listen_port": 8765},
    "shapes": [{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 512,
                "price_per_second_mist": 10}],
    "images": [{"name": "python", "reference": "builtin"}],
    "availability": {"max_sessions": 2, "schedule": [{"days": ["mon"], "start": "09:00"}]},
    "limits": {"max_body_bytes": 4096},
    "tls": {"mode": "off"},
    "settlement": {"grace_s": 30},
}


def mutated_config() -> st.SearchStrategy[dict]:
    """A valid config with one value (at any depth) replaced by an arbitrary one."""
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((*path, k))
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((*path, i))
                walk(v, (*path, i))

    walk(VALID_CONFIG, ())

    def mutate(path, value):
        data = json.loads(json.dumps(VALID_CONFIG))
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return data

    return st.builds(mutate, st.sampled_from(paths), toml_values)


def test_parse_config_on_arbitrary_dicts_raises_only_config_error() -> None:
    count = Counter()
    assert parse_config(VALID_CONFIG).tls == "off"

    @settings(FAST, max_examples=1000)
    @given(plausible_config() | mutated_config())
    def check(data: dict) -> None:
        count.tried += 1
        try:
            config = parse_config(data)
        except ConfigError as exc:
            assert str(exc)
            return
        count.accepted += 1
        assert config.shapes and config.images
        assert all(s.price_mist_per_second >= 0 for s in config.shapes)
        assert 0 <= config.listen_port <= 65535

    check()
    count.report("parse_config", minimum=800)
    assert count.accepted > 0


TOML_ALPHABET = string.ascii_letters + string.digits + "[]=\"'.,-_:{}#\n \t+\\" + "é\x00"


def test_load_config_on_arbitrary_text_raises_only_config_error(tmp_path) -> None:
    count = Counter()
    path = tmp_path / "provider.toml"
    base = ('[provider]\nname = "n"\n[[shapes]]\nname = "a"\ncpus = 1\nmemory_mb = 64\n'
            'price_per_second_mist = 1\n[[images]]\nname = "p"\nreference = "builtin"\n')

    @FAST
    @given(st.one_of(st.binary(max_size=200),
                     st.text(alphabet=TOML_ALPHABET, max_size=200).map(str.encode),
                     st.tuples(st.integers(0, len(base)), st.text(TOML_ALPHABET, max_size=20))
                     .map(lambda t: (base[:t[0]] + t[1] + base[t[0]:]).encode())))
    def check(raw: bytes) -> None:
        count.tried += 1
        path.write_bytes(raw)
        try:
            load_config(path)
        except ConfigError:
            return
        count.accepted += 1

    check()
    count.report("load_config")
    assert count.accepted > 0


# --- the session request body -------------------------------------------------------------

json_any = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=3),
    max_leaves=10)


def test_session_request_from_json_on_arbitrary_json() -> None:
    count = Counter()
    keys = ["image", "shape", "gpus", "cpus", "memory_mb", "max_seconds", "channel_id"]

    @settings(FAST, max_examples=1000)
    @given(st.one_of(json_any, st.fixed_dictionaries({}, optional={k: json_any for k in keys}),
                     st.fixed_dictionaries({"image": st.text(min_size=1, max_size=10)},
                                           optional={k: json_any for k in keys[1:]})))
    def check(body) -> None:
        count.tried += 1
        # what a real request delivers: the body went through JSON
        try:
            body = json.loads(json.dumps(body))
        except ValueError:
            assume(False)
        try:
            req = SessionRequest.from_json(body)
        except WalnutError as exc:  # SessionError, or NumberError naming the field
            assert exc.status == 400 and exc.message
            return
        count.accepted += 1
        assert isinstance(req.image, str) and req.image
        for key in ("gpus", "memory_mb", "max_seconds"):
            value = getattr(req, key)
            assert value is None or (isinstance(value, int) and not isinstance(value, bool))
        assert req.cpus is None or 0 < req.cpus <= 1024

    check()
    count.report("SessionRequest.from_json", minimum=800)
    assert count.accepted > 0
