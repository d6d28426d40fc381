"""The Sui ledger: the walnut Move package (contracts/) through pysui.

Split in two so that everything short of a node is tested for real:

* Offline (no pysui needed except for `build_transaction_data`): the Move calls each
  ledger operation makes (`plan_*`), their pure arguments as BCS bytes, decoding of
  `Channel` / `ProviderEntry` object contents, offline transaction building and
  signing, and mapping a Move abort back to the same `LedgerError` the local ledger
  raises.
* Live (`SuiLedger`): pysui's async GraphQL client against a Sui GraphQL service
  (tests/sui_standin.py stands in for one; $WALNUT_SUI_RPC_URL names a real one). pysui
  is imported lazily, so the package works without it.

What a node returns is checked before it is believed: an object counts as a channel or a
provider entry only when its Move type is exactly this package's struct, a channel's
locked amount is its `Balance<SUI>`, and registry events are read page by page to the end.

Pure arguments are always passed as ready BCS bytes: pysui's own encoding of a
`vector<u8>` given as a list of ints drops 0x00 bytes (see docs/research), which would
corrupt keys and signatures.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..common.keys import ED25519_FLAG, KeyPair
from . import bcs
from .base import (
    Channel,
    Ledger,
    LedgerError,
    ProviderEntry,
    Signer,
    check_amount,
    fingerprint_bytes,
    normalize,
    now_ms,
)
from .vouchers import PUBLIC_KEY_LENGTH

CLOCK_OBJECT_ID = "0x" + "00" * 31 + "06"
SUI_COIN_TYPE = "0x2::sui::SUI"
DEFAULT_GAS_BUDGET = 50_000_000  # MIST; a ceiling, the node charges what is used
TRANSACTION_INTENT = b"\x00\x00\x00"  # scope TransactionData, version V0, app Sui


# --- what each operation calls ----------------------------------------------------


@dataclass(frozen=True)
class Pure:
    """A pure argument, already BCS-encoded."""

    data: bytes


@dataclass(frozen=True)
class SharedObject:
    object_id: str
    mutable: bool = True


@dataclass(frozen=True)
class GasSplit:
    """A new Coin<SUI> of `amount` MIST split off the gas coin in the same transaction."""

    amount: int


@dataclass(frozen=True)
class MoveCall:
    module: str
    function: str
    arguments: tuple[Pure | SharedObject | GasSplit, ...]


CLOCK = SharedObject(CLOCK_OBJECT_ID, mutable=False)


def plan_open(
    provider: str, voucher_pubkey: bytes, deposit: int, price: int, challenge_ms: int
) -> list[MoveCall]:
    return [
        MoveCall(
            "channel",
            "open",
            (
                GasSplit(deposit),
                Pure(bcs.address(provider)),
                Pure(bcs.byte_vector(voucher_pubkey)),
                Pure(bcs.u64(price)),
                Pure(bcs.u64(challenge_ms)),
            ),
        )
    ]


def plan_top_up(channel_id: str, amount: int) -> list[MoveCall]:
    return [MoveCall("channel", "top_up", (SharedObject(channel_id), GasSplit(amount)))]


def plan_claim(channel_id: str, amount: int, signature: bytes) -> list[MoveCall]:
    args = (SharedObject(channel_id), Pure(bcs.u64(amount)), Pure(bcs.byte_vector(signature)))
    return [MoveCall("channel", "claim", args)]


def plan_claim_and_close(channel_id: str, amount: int, signature: bytes) -> list[MoveCall]:
    """The provider's normal end of a session: one transaction, two calls."""
    return [*plan_claim(channel_id, amount, signature), *plan_provider_close(channel_id)]


def plan_provider_close(channel_id: str) -> list[MoveCall]:
    return [MoveCall("channel", "provider_close", (SharedObject(channel_id),))]


def plan_request_close(channel_id: str) -> list[MoveCall]:
    return [MoveCall("channel", "request_close", (SharedObject(channel_id), CLOCK))]


def plan_finalize_close(channel_id: str) -> list[MoveCall]:
    return [MoveCall("channel", "finalize_close", (SharedObject(channel_id), CLOCK))]


def plan_register(endpoint: str, fingerprint: bytes, specs: str, price: int) -> list[MoveCall]:
    args = (
        Pure(bcs.string(endpoint)),
        Pure(bcs.byte_vector(fingerprint)),
        Pure(bcs.string(specs)),
        Pure(bcs.u64(price)),
    )
    return [MoveCall("registry", "register", args)]


def plan_update(
    provider_id: str, endpoint: str, fingerprint: bytes, specs: str, price: int
) -> list[MoveCall]:
    register = plan_register(endpoint, fingerprint, specs, price)[0]
    return [MoveCall("registry", "update", (SharedObject(provider_id), *register.arguments))]


def plan_retire(provider_id: str) -> list[MoveCall]:
    return [MoveCall("registry", "retire", (SharedObject(provider_id),))]


# --- object contents (BCS of the Move structs) --------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated object contents")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def address(self) -> str:
        return bcs.format_address(self.take(32))

    def boolean(self) -> bool:
        return self.take(1) != b"\x00"

    def uleb(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def bytes_(self) -> bytes:
        return self.take(self.uleb())

    def option_u64(self) -> int | None:
        length = self.uleb()  # Move's Option is a vector of length 0 or 1
        return self.u64() if length else None


def decode_channel(contents: bytes) -> Channel:
    """A `walnut::channel::Channel` from its BCS contents (field order of the struct)."""
    r = _Reader(contents)
    return Channel(
        channel_id=r.address(),
        renter=r.address(),
        provider=r.address(),
        voucher_pubkey=r.bytes_(),
        **_channel_amounts(r),
    )


def _channel_amounts(r: _Reader) -> dict[str, object]:
    # What the channel holds is its Balance<SUI>, whatever its counters say: `deposited` is
    # derived from it so that `Channel.locked` (deposited - claimed - refunded) is exactly it.
    funds = r.u64()
    r.u64()  # the recorded `deposited`; equals funds + claimed + refunded in a sound channel
    claimed, refunded = r.u64(), r.u64()
    return {
        "deposited": funds + claimed + refunded,
        "claimed": claimed,
        "refunded": refunded,
        "price_per_second_mist": r.u64(),
        "challenge_period_ms": r.u64(),
        "close_requested_at_ms": r.option_u64(),
        "closed": r.boolean(),
    }


def decode_provider(contents: bytes) -> ProviderEntry:
    r = _Reader(contents)
    return ProviderEntry(
        provider_id=r.address(),
        owner=r.address(),
        endpoint=r.bytes_().decode(),
        tls_fingerprint=r.bytes_().hex(),
        specs=r.bytes_().decode(),
        price_per_second_mist=r.u64(),
        active=r.boolean(),
    )


# --- aborts -------------------------------------------------------------------------

_ABORT_PATTERNS = [
    re.compile(r"MoveAbort\(.*\},\s*(\d+)\)", re.S),  # Rust Debug form in node errors
    re.compile(r"abort[_ ]code[\"']?\s*[:=]\s*(\d+)", re.I),  # structured forms
]


def abort_from_error(text: str) -> LedgerError:
    """The `LedgerError` for a failed transaction's error text (E_NODE when not an abort)."""
    for pattern in _ABORT_PATTERNS:
        match = pattern.search(text)
        if match:
            return LedgerError.from_abort(int(match.group(1)), _first_line(text))
    return LedgerError("E_NODE", _first_line(text))


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line[:300]


# --- offline transaction building and signing ---------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    object_id: str
    version: int
    digest: str  # base58, as nodes print it


def build_transaction_data(
    *,
    package_id: str,
    calls: list[MoveCall],
    sender: str,
    gas_coin: ObjectRef,
    gas_price: int,
    gas_budget: int = DEFAULT_GAS_BUDGET,
    shared_versions: dict[str, int],
) -> bytes:
    """BCS TransactionData for `calls`, built without a node.

    `shared_versions` maps each shared object id to its initial shared version (which
    a node reports once, when the object is created).
    """
    from pysui.sui.sui_bcs import bcs as sbcs  # noqa: PLC0415  (optional: the sui extra)
    from pysui.sui.sui_common.txn_transaction_builder import ProgrammableTransactionBuilder  # noqa: PLC0415  (optional: the sui extra)

    builder = ProgrammableTransactionBuilder()
    package = sbcs.Address.from_str(normalize(package_id))
    for call in calls:
        arguments = []
        for arg in call.arguments:
            if isinstance(arg, Pure):
                arguments.append(builder.input_pure(sbcs.BuilderArg("Pure", list(arg.data))))
            elif isinstance(arg, GasSplit):
                amount = builder.input_pure(sbcs.BuilderArg("Pure", list(bcs.u64(arg.amount))))
                arguments.append(builder.split_coin(sbcs.Argument("GasCoin"), [amount]))
            else:
                object_id = normalize(arg.object_id)
                if object_id not in shared_versions:
                    raise ValueError(f"no initial shared version given for {object_id}")
                ref = sbcs.SharedObjectReference(
                    sbcs.Address.from_str(object_id), shared_versions[object_id], arg.mutable
                )
                arguments.append(
                    builder.input_obj(
                        sbcs.BuilderArg("Object", sbcs.Address.from_str(object_id)),
                        sbcs.ObjectArg("SharedObject", ref),
                    )
                )
        builder.move_call(
            target=package,
            arguments=arguments,
            type_arguments=[],
            module=call.module,
            function=call.function,
        )
    gas = sbcs.GasData(
        [
            sbcs.ObjectReference(
                sbcs.Address.from_str(normalize(gas_coin.object_id)),
                gas_coin.version,
                sbcs.Digest.from_str(gas_coin.digest),
            )
        ],
        sbcs.Address.from_str(normalize(sender)),
        gas_price,
        gas_budget,
    )
    data = sbcs.TransactionData(
        "V1",
        sbcs.TransactionDataV1(
            builder.finish_for_inspect(),
            sbcs.Address.from_str(normalize(sender)),
            gas,
            sbcs.TransactionExpiration("None", None),
        ),
    )
    return data.serialize()


def transaction_digest_to_sign(tx_bytes: bytes) -> bytes:
    return hashlib.blake2b(TRANSACTION_INTENT + tx_bytes, digest_size=32).digest()


def sign_transaction(key: KeyPair, tx_bytes: bytes) -> str:
    """Sui's serialized signature, base64(flag || signature || public key)."""
    signature = key.sign(transaction_digest_to_sign(tx_bytes))
    return base64.b64encode(bytes([ED25519_FLAG]) + signature + key.public_key).decode()


# --- what the node says, checked ------------------------------------------------------

EVENT_PAGE_SIZE = 50  # the most a Sui GraphQL service serves per page of events
MAX_EVENT_PAGES = 100_000  # a bound on a node whose pages never end
DEFAULT_MULTI_GET_SIZE = 50

# Our own documents rather than pysui's object commands: those crash on an id the node
# does not know, and we need each object's Move type beside its BCS contents.
OBJECTS_QUERY = """
query WalnutObjects($keys: [ObjectKey!]!) {
  multiGetObjects(keys: $keys) { address asMoveObject { contents { type { repr } bcs } } }
}
"""
EVENTS_QUERY = """
query WalnutEvents($type: String!, $first: Int!, $after: String) {
  events(filter: {type: $type}, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { contents { type { repr } json } }
  }
}
"""


def struct_tag(move_type: object) -> tuple[str, str, str] | None:
    """(package, module, name) of a non-generic Move struct type, None for anything else."""
    if not isinstance(move_type, str) or "<" in move_type:
        return None
    parts = move_type.split("::")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        return bcs.normalize_address(parts[0]), parts[1], parts[2]
    except ValueError:
        return None


def _base64_or_empty(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""  # fails to decode as the struct, like any other garbled contents


def _address_or_none(value: object) -> str | None:
    try:
        return bcs.normalize_address(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- the live ledger ------------------------------------------------------------------


class SuiLedger(Ledger):
    """The walnut package on a Sui network, through pysui's GraphQL client.

    `rpc_url` is the network's GraphQL service, `package_id` the published walnut package
    (its objects' types name it), `key` the wallet that signs when a caller names only
    its address. Only objects whose Move type is exactly `<package_id>::channel::Channel`
    or `<package_id>::registry::ProviderEntry` are read as channels or providers: anyone
    can publish a look-alike struct in another package.
    """

    def __init__(
        self,
        rpc_url: str,
        package_id: str,
        *,
        key: KeyPair | None = None,
        client: object | None = None,
        gas_budget: int = DEFAULT_GAS_BUDGET,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if not rpc_url.startswith(("http://", "https://")):
            raise LedgerError("E_INVALID_ARGUMENT", "the Sui RPC URL must be http(s)://...")
        self.rpc_url = rpc_url
        self.package_id = normalize(package_id)
        self.key = key
        self.gas_budget = gas_budget
        self.clock = clock  # used only for display; the chain's Clock decides
        # The client connects on first use, so a process configured for Sui starts without
        # its node and the first ledger call says which node did not answer.
        self._client_made: object | None = client
        self._client_lock = threading.Lock()
        self._config_dir: tempfile.TemporaryDirectory | None = None
        # pysui is async; its coroutines run on one loop in a thread of ours, so any thread
        # may call (the server's event loop thread, asyncio.to_thread workers, at once).
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="walnut-sui", daemon=True
        )
        self._thread.start()

    @property
    def _client(self):
        with self._client_lock:
            if self._client_made is None:
                config_dir = tempfile.TemporaryDirectory(prefix="walnut-pysui-")
                try:
                    self._client_made = _make_client(self.rpc_url, Path(config_dir.name))
                except LedgerError:
                    config_dir.cleanup()  # pysui refuses to configure a used folder again
                    raise
                self._config_dir = config_dir
            return self._client_made

    def close(self) -> None:
        closer = getattr(self._client_made, "close", None)
        if closer is not None:
            try:
                self._run(closer())
            except LedgerError:
                pass  # a node gone at close: nothing of ours is left to flush
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        if self._config_dir is not None:
            self._config_dir.cleanup()

    def __enter__(self) -> SuiLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except LedgerError:
            raise
        except Exception as exc:  # httpx, gql and pysui each raise their own kinds
            raise self.unreachable(exc) from exc

    def unreachable(self, exc: BaseException) -> LedgerError:
        """E_NODE naming the node, in one line."""
        return LedgerError(
            "E_NODE",
            f"the Sui node at {self.rpc_url} did not answer: "
            f"{_first_line(str(exc) or type(exc).__name__)}",
        )

    def move_type(self, module: str, name: str) -> str:
        return f"{self.package_id}::{module}::{name}"

    def _is_ours(self, move_type: object, module: str, name: str) -> bool:
        return struct_tag(move_type) == (self.package_id, module, name)

    def _signing_key(self, signer: Signer) -> KeyPair:
        if isinstance(signer, KeyPair):
            return signer
        if self.key is not None and normalize(signer) == self.key.address:
            return self.key
        raise LedgerError("E_INVALID_ARGUMENT", "a Sui transaction needs that address's key")

    # --- transactions -------------------------------------------------------
    def execute(self, signer: Signer, calls: list[MoveCall]) -> dict:
        return self._run(self._execute(self._signing_key(signer), calls))

    async def _execute(self, key: KeyPair, calls: list[MoveCall]) -> dict:
        from pysui.sui.sui_bcs import bcs as sbcs  # noqa: PLC0415  (optional: the sui extra)
        from pysui.sui.sui_common import sui_commands as cmd  # noqa: PLC0415  (optional: the sui extra)

        txn = await self._client.transaction(initial_sender=key.address)
        for call in calls:
            arguments = []
            for arg in call.arguments:
                if isinstance(arg, Pure):
                    arguments.append(
                        txn.builder.input_pure(sbcs.BuilderArg("Pure", list(arg.data)))
                    )
                elif isinstance(arg, GasSplit):
                    arguments.append(await txn.split_coin(coin=txn.gas, amounts=[arg.amount]))
                else:
                    arguments.append(normalize(arg.object_id))
            await txn.move_call(
                target=f"{self.package_id}::{call.module}::{call.function}", arguments=arguments
            )
        data = await txn.transaction_data(gas_budget=self.gas_budget)
        tx_bytes = data.serialize()
        result = await self._client.execute(
            command=cmd.ExecuteTransaction(
                tx_bytestr=base64.b64encode(tx_bytes).decode(),
                sig_array=[sign_transaction(key, tx_bytes)],
            )
        )
        if not result.is_ok():
            raise abort_from_error(str(result.result_string))
        effects = _as_dict(result.result_data)
        failure = _find_failure(effects)
        if failure:
            raise abort_from_error(failure)
        return effects

    # --- reads --------------------------------------------------------------------
    async def _query(self, document: str, variables: dict) -> dict:
        from gql import GraphQLRequest  # noqa: PLC0415  (optional: pysui's, the sui extra)

        request = GraphQLRequest(document, variable_values=variables)
        result = await self._client.execute_document_node(with_node=request)
        if not result.is_ok():
            raise LedgerError(
                "E_NODE",
                f"the Sui node at {self.rpc_url} refused: {_first_line(str(result.result_string))}",
            )
        return _as_dict(result.result_data)

    def _multi_get_size(self) -> int:
        config = getattr(self._client, "rpc_config", None)
        config = config() if callable(config) else config
        size = getattr(getattr(config, "serviceConfig", None), "maxMultiGetSize", None)
        return size if isinstance(size, int) and size > 0 else DEFAULT_MULTI_GET_SIZE

    async def _contents_of_type(self, ids: list[str], module: str, name: str) -> dict[str, bytes]:
        """BCS contents of those of `ids` that exist and are exactly this package's struct."""
        found: dict[str, bytes] = {}
        for batch in _batches(ids, self._multi_get_size()):
            data = await self._query(OBJECTS_QUERY, {"keys": [{"address": i} for i in batch]})
            for obj in data.get("multiGetObjects") or []:
                obj = obj or {}
                contents = (obj.get("asMoveObject") or {}).get("contents") or {}
                address = _address_or_none(obj.get("address"))
                move_type = (contents.get("type") or {}).get("repr")
                ours = self._is_ours(move_type, module, name)
                if ours and address in batch and isinstance(contents.get("bcs"), str):
                    found[address] = _base64_or_empty(contents["bcs"])
        return found

    def get_channel(self, channel_id: str) -> Channel:
        channel_id = normalize(channel_id)
        contents = self._run(self._contents_of_type([channel_id], "channel", "Channel"))
        channel = _decoded(decode_channel, contents.get(channel_id))
        if channel is None or channel.channel_id != channel_id:
            raise LedgerError(
                "E_UNKNOWN_CHANNEL", f"{channel_id} is not a {self.move_type('channel', 'Channel')}"
            )
        return channel

    def get_provider(self, provider_id: str) -> ProviderEntry:
        entries = self._run(self._providers([normalize(provider_id)]))
        if not entries:
            wanted = self.move_type("registry", "ProviderEntry")
            raise LedgerError("E_UNKNOWN_PROVIDER", f"{normalize(provider_id)} is not a {wanted}")
        return entries[0]

    async def _providers(self, ids: list[str]) -> list[ProviderEntry]:
        contents = await self._contents_of_type(ids, "registry", "ProviderEntry")
        entries = [_decoded(decode_provider, contents.get(i)) for i in ids]
        return [e for e, i in zip(entries, ids, strict=True) if e and e.provider_id == i]

    def list_providers(self, *, include_retired: bool = False) -> list[ProviderEntry]:
        entries = self._run(self._providers(self._run(self._registered_ids())))
        return [e for e in entries if include_retired or e.active]

    async def _registered_ids(self) -> list[str]:
        """Every provider id in this package's ProviderRegistered events, all pages of them.

        Discovery is by event: there is no global registry object (see contracts/README).
        """
        event_type = self.move_type("registry", "ProviderRegistered")
        ids: dict[str, None] = {}  # ordered, without repeats
        cursor, seen = None, set()
        for _ in range(MAX_EVENT_PAGES):
            variables = {"type": event_type, "first": EVENT_PAGE_SIZE, "after": cursor}
            events = (await self._query(EVENTS_QUERY, variables)).get("events") or {}
            for node in events.get("nodes") or []:
                contents = (node or {}).get("contents") or {}
                move_type = (contents.get("type") or {}).get("repr")
                fields = contents.get("json")
                if self._is_ours(move_type, "registry", "ProviderRegistered") and isinstance(
                    fields, dict
                ):
                    address = _address_or_none(fields.get("provider_id"))
                    if address:
                        ids[address] = None
            page = events.get("pageInfo") or {}
            if not page.get("hasNextPage"):
                return list(ids)
            cursor = page.get("endCursor")
            if not isinstance(cursor, str) or cursor in seen:
                raise LedgerError("E_NODE", "the node's pages of registry events do not advance")
            seen.add(cursor)
        raise LedgerError("E_NODE", f"more than {MAX_EVENT_PAGES} pages of registry events")

    # --- Ledger -----------------------------------------------------------------
    def balance(self, address: str) -> int:
        from pysui.sui.sui_common import sui_commands as cmd  # noqa: PLC0415  (optional: the sui extra)

        result = self._run(
            self._client.execute(command=cmd.GetAddressCoinBalance(owner=normalize(address)))
        )
        if not result.is_ok():
            raise LedgerError(
                "E_NODE",
                f"the Sui node at {self.rpc_url} refused: {_first_line(str(result.result_string))}",
            )
        return _total_balance(result.result_data)

    def register_provider(self, owner, *, endpoint, tls_fingerprint, specs, price_per_second_mist):
        check_amount(price_per_second_mist, what="price", allow_zero=True)
        fp = fingerprint_bytes(tls_fingerprint)
        effects = self.execute(owner, plan_register(endpoint, fp, specs, price_per_second_mist))
        return self.get_provider(_created_id(effects, "::registry::ProviderEntry"))

    def update_provider(
        self,
        owner,
        provider_id,
        *,
        endpoint=None,
        tls_fingerprint=None,
        specs=None,
        price_per_second_mist=None,
    ):
        entry = self.get_provider(provider_id)
        fp = fingerprint_bytes(tls_fingerprint or entry.tls_fingerprint)
        price = (
            entry.price_per_second_mist if price_per_second_mist is None else price_per_second_mist
        )
        check_amount(price, what="price", allow_zero=True)
        calls = plan_update(
            entry.provider_id, endpoint or entry.endpoint, fp, specs or entry.specs, price
        )
        self.execute(owner, calls)
        return self.get_provider(entry.provider_id)

    def retire_provider(self, owner, provider_id):
        entry = self.get_provider(provider_id)
        self.execute(owner, plan_retire(entry.provider_id))
        return self.get_provider(entry.provider_id)

    def open_channel(
        self, renter, provider, voucher_pubkey, deposit, price_per_second_mist, challenge_period_s
    ):
        check_amount(deposit, what="deposit")
        check_amount(price_per_second_mist, what="price", allow_zero=True)
        check_amount(challenge_period_s, what="challenge period", allow_zero=True)
        if len(bytes(voucher_pubkey)) != PUBLIC_KEY_LENGTH:
            raise LedgerError("E_BAD_PUBLIC_KEY", "the voucher public key is 32 bytes (Ed25519)")
        calls = plan_open(
            normalize(provider),
            bytes(voucher_pubkey),
            deposit,
            price_per_second_mist,
            challenge_period_s * 1000,
        )
        effects = self.execute(renter, calls)
        return self.get_channel(_created_id(effects, "::channel::Channel"))

    # Each channel operation reads the channel first, so a look-alike object of another
    # package is refused before anything is signed.
    def top_up(self, renter, channel_id, amount):
        check_amount(amount)
        channel = self.get_channel(channel_id)
        self.execute(renter, plan_top_up(channel.channel_id, amount))
        return self.get_channel(channel.channel_id)

    def claim(self, provider, channel_id, amount, signature):
        check_amount(amount, what="voucher amount", allow_zero=True)
        before = self.get_channel(channel_id)
        self.execute(provider, plan_claim(before.channel_id, amount, bytes(signature)))
        return self.get_channel(before.channel_id).claimed - before.claimed

    def provider_close(self, provider, channel_id):
        channel = self.get_channel(channel_id)
        self.execute(provider, plan_provider_close(channel.channel_id))
        return self.get_channel(channel.channel_id)

    def request_close(self, renter, channel_id):
        channel = self.get_channel(channel_id)
        self.execute(renter, plan_request_close(channel.channel_id))
        return self.get_channel(channel.channel_id)

    def finalize_close(self, caller, channel_id):
        channel = self.get_channel(channel_id)
        self.execute(caller, plan_finalize_close(channel.channel_id))
        return self.get_channel(channel.channel_id)


def _decoded(decode: Callable[[bytes], object], contents: bytes | None):
    """The decoded struct, or None where there is none or it does not decode."""
    if contents is None:
        return None
    try:
        return decode(contents)
    except (ValueError, UnicodeDecodeError):
        return None


def _make_client(rpc_url: str, config_dir: Path):
    """pysui's GraphQL client for `rpc_url`, configured in `config_dir` (keys stay ours)."""
    try:
        from pysui import PysuiConfiguration, client_factory  # noqa: PLC0415  (optional: the sui extra)
        from pysui.sui.sui_common.config.confgroup import GroupProtocol, NetworkType  # noqa: PLC0415  (optional: the sui extra)
    except ImportError as exc:  # a process configured for Sui, installed without the extra
        raise LedgerError(
            "E_NODE", 'the Sui ledger needs pysui: pip install "jupyter-walnut[sui]"'
        ) from exc

    config = PysuiConfiguration.initialize_config(
        in_folder=config_dir, init_groups=[{"name": "walnut", "make_active": True}]
    )
    config.new_profile(
        profile_name="walnut",
        url=rpc_url,
        network_type=NetworkType.TEST,
        make_active=True,
        in_group="walnut",
        persist=False,
    )
    try:  # the client reads the service's schema and configuration here
        return client_factory(config, group_name="walnut", protocol=GroupProtocol.GRAPHQL)
    except Exception as exc:  # httpx, gql and pysui each raise their own kinds
        detail = _first_line(str(exc) or type(exc).__name__)
        raise LedgerError("E_NODE", f"no Sui GraphQL service at {rpc_url}: {detail}") from exc


# --- result shapes (pysui's messages or GraphQL dicts) ------------------------------


def _as_dict(data: object) -> dict:
    if isinstance(data, dict):
        return data
    for name in ("to_dict", "to_pydict"):
        method = getattr(data, name, None)
        if method is not None:
            return method()
    return {}


def _find_failure(effects: dict) -> str | None:
    text = repr(effects)
    if "MoveAbort" in text or ("FAILURE" in text.upper() and "abort" in text.lower()):
        return text
    return None


def _created_id(effects: dict, type_suffix: str) -> str:
    # Which object is ours is checked by the read that follows (get_channel/get_provider).
    text = repr(effects)
    for match in re.finditer(r"0x[0-9a-f]{64}", text):
        tail = text[match.end() : match.end() + 400]
        if type_suffix in tail:
            return match.group(0)
    raise LedgerError("E_NODE", f"the transaction created no {type_suffix.lstrip(':')}")


def _total_balance(data: object) -> int:
    for attr in ("balance", "total_balance", "totalBalance"):
        value = getattr(data, attr, None)
        if value is not None:
            return int(getattr(value, "balance", value))
    found = _as_dict(data)
    for key in ("totalBalance", "balance", "total_balance"):
        if key in found:
            value = found[key]
            return int(value.get("balance", 0) if isinstance(value, dict) else value)
    raise LedgerError("E_NODE", "the node returned no balance")
