"""A stand-in Sui GraphQL RPC service on loopback, for driving SuiLedger through pysui.

pysui (1.x) talks to Sui over GraphQL or gRPC only; SuiLedger uses GraphQL, whose event
query pages with `pageInfo { hasNextPage endCursor }`. This service answers with
graphql-core over a subset of the Sui GraphQL schema: the fields pysui's client reads
when it starts (introspection, chain and service configuration) and those SuiLedger's
reads use (objects, multi-gets, events, balances), shaped as a real node answers them.
Tests put objects and events in it, then point a real SuiLedger at `url`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from dataclasses import dataclass, field

import tornado.httpserver
import tornado.netutil
import tornado.web
from graphql import GraphQLError, build_schema, graphql_sync

RPC_VERSION = "1.60.0-standin"  # pysui reads the x-sui-rpc-version header at start
MAX_PAGE_SIZE = 50  # a real node's limit for events; more is an error, as there
DEFAULT_PAGE_SIZE = 20
MAX_MULTI_GET = 50

SCHEMA = build_schema(
    """
    scalar SuiAddress
    scalar UInt53
    scalar BigInt
    scalar Base64
    scalar DateTime
    scalar JSON

    type Query {
      chainIdentifier: String!
      checkpoint(sequenceNumber: UInt53): Checkpoint
      serviceConfig: ServiceConfig!
      protocolConfigs(version: UInt53): ProtocolConfigs
      object(address: SuiAddress!, version: UInt53, rootVersion: UInt53,
             atCheckpoint: UInt53): Object
      multiGetObjects(keys: [ObjectKey!]!): [Object]!
      events(first: Int, after: String, last: Int, before: String,
             filter: EventFilter): EventConnection
      address(address: SuiAddress!): Address
    }
    type Checkpoint { sequenceNumber: UInt53!  timestamp: DateTime  epoch: Epoch }
    type Epoch { epochId: UInt53!  referenceGasPrice: BigInt }
    type ServiceConfig {
      mutationTimeoutMs: Int  queryTimeoutMs: Int  maxQueryDepth: Int  maxQueryNodes: Int
      maxOutputNodes: Int  maxTransactionPayloadSize: Int  maxQueryPayloadSize: Int
      maxMultiGetSize: Int  maxTypeArgumentDepth: Int  maxTypeArgumentWidth: Int
      maxTypeNodes: Int  maxMoveValueDepth: Int
    }
    type ProtocolConfigs {
      protocolVersion: UInt53!  configs: [ProtocolConfig!]!  featureFlags: [FeatureFlag!]!
    }
    type ProtocolConfig { key: String!  value: String }
    type FeatureFlag { key: String!  value: Boolean! }
    input ObjectKey {
      address: SuiAddress!  version: UInt53  rootVersion: UInt53  atCheckpoint: UInt53
    }
    type Object {
      address: SuiAddress!  version: UInt53!  digest: String!  asMoveObject: MoveObject
      previousTransaction: Transaction
    }
    type MoveObject { address: SuiAddress!  version: UInt53!  contents: MoveValue }
    type MoveValue { type: MoveType  bcs: Base64  json: JSON }
    type MoveType { repr: String! }
    type Transaction { digest: String! }
    input EventFilter {
      afterCheckpoint: UInt53  atCheckpoint: UInt53  beforeCheckpoint: UInt53
      module: String  sender: SuiAddress  type: String
    }
    type EventConnection { pageInfo: PageInfo!  edges: [EventEdge!]!  nodes: [Event!]! }
    type EventEdge { node: Event!  cursor: String! }
    type PageInfo {
      hasNextPage: Boolean!  hasPreviousPage: Boolean!  startCursor: String  endCursor: String
    }
    type Event { sequenceNumber: UInt53!  timestamp: DateTime  contents: MoveValue }
    type Address { address: SuiAddress!  balance(coinType: String): Balance }
    type Balance {
      coinType: MoveType  addressBalance: BigInt  coinBalance: BigInt  totalBalance: BigInt
    }
    """
)

SERVICE_CONFIG = {
    "mutationTimeoutMs": 60_000, "queryTimeoutMs": 40_000, "maxQueryDepth": 20,
    "maxQueryNodes": 300, "maxOutputNodes": 100_000, "maxTransactionPayloadSize": 174_763,
    "maxQueryPayloadSize": 5_000, "maxMultiGetSize": MAX_MULTI_GET,
    "maxTypeArgumentDepth": 16, "maxTypeArgumentWidth": 32, "maxTypeNodes": 256,
    "maxMoveValueDepth": 128,
}  # fmt: skip
DIGEST = "11111111111111111111111111111111"  # base58 of 32 zero bytes


def _cursor(index: int) -> str:
    return base64.b64encode(json.dumps({"e": index}).encode()).decode()


def _index(cursor: str) -> int:
    try:
        return int(json.loads(base64.b64decode(cursor))["e"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphQLError(f"Invalid cursor: {cursor}") from exc


@dataclass
class SuiStandIn:
    """State of the stand-in chain; `start()` serves it on 127.0.0.1 at `url`."""

    objects: dict[str, dict] = field(default_factory=dict)  # address -> Object
    events: list[dict] = field(default_factory=list)  # Event, in emission order
    balances: dict[str, int] = field(default_factory=dict)
    event_queries: int = 0  # how many pages of events were served
    url: str = ""

    # --- what tests put on the chain ------------------------------------------------
    def put_object(self, address: str, move_type: str, contents: bytes) -> None:
        value = {"type": {"repr": move_type}, "bcs": base64.b64encode(contents).decode()}
        self.objects[address] = {
            "address": address, "version": 7, "digest": DIGEST,
            "asMoveObject": {"address": address, "version": 7, "contents": value},
            "previousTransaction": {"digest": DIGEST},
        }  # fmt: skip

    def emit(self, event_type: str, fields: dict) -> None:
        contents = {"type": {"repr": event_type}, "json": fields, "bcs": None}
        self.events.append({"sequenceNumber": 0, "timestamp": None, "contents": contents})

    # --- resolvers (graphql-core calls a callable field with its arguments) ----------
    def _object(self, _info, address: str, **_bounds) -> dict | None:
        return self.objects.get(address)

    def _multi_get(self, _info, keys: list[dict]) -> list[dict | None]:
        if len(keys) > MAX_MULTI_GET:
            raise GraphQLError(f"Too many keys: at most {MAX_MULTI_GET}")
        return [self.objects.get(key["address"]) for key in keys]

    def _events(self, _info, first=None, after=None, filter=None, **_) -> dict:  # noqa: A002
        if first is not None and first > MAX_PAGE_SIZE:
            raise GraphQLError(f"Page size is too large: {first} > {MAX_PAGE_SIZE}")
        self.event_queries += 1
        wanted = (filter or {}).get("type")
        matching = [
            (i, e) for i, e in enumerate(self.events)
            if wanted is None or e["contents"]["type"]["repr"] == wanted
        ]  # fmt: skip
        start = _index(after) + 1 if after else 0
        rest = [(i, e) for i, e in matching if i >= start]
        page = rest[: first or DEFAULT_PAGE_SIZE]
        edges = [{"cursor": _cursor(i), "node": e} for i, e in page]
        return {
            "pageInfo": {
                "hasNextPage": len(rest) > len(page),
                "hasPreviousPage": start > 0,
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": edges[-1]["cursor"] if edges else None,
            },
            "edges": edges,
            "nodes": [edge["node"] for edge in edges],
        }

    def _address(self, _info, address: str) -> dict:
        def balance(_info, coinType: str = "0x2::sui::SUI") -> dict:  # noqa: N803
            total = str(self.balances.get(address, 0))
            return {"coinType": {"repr": coinType}, "addressBalance": "0",
                    "coinBalance": total, "totalBalance": total}  # fmt: skip

        return {"address": address, "balance": balance}

    def _root(self) -> dict:
        return {
            "chainIdentifier": "4c78adac",
            "checkpoint": {
                "sequenceNumber": 1000, "timestamp": "2026-01-01T00:00:00Z",
                "epoch": {"epochId": 3, "referenceGasPrice": "1000"},
            },
            "serviceConfig": SERVICE_CONFIG,
            "protocolConfigs": {"protocolVersion": 90, "configs": [], "featureFlags": []},
            "object": self._object,
            "multiGetObjects": self._multi_get,
            "events": self._events,
            "address": self._address,
        }  # fmt: skip

    def answer(self, request: dict) -> dict:
        result = graphql_sync(
            SCHEMA,
            request.get("query") or "",
            root_value=self._root(),
            variable_values=request.get("variables"),
            operation_name=request.get("operationName"),
        )
        return result.formatted

    # --- serving ----------------------------------------------------------------------
    def start(self) -> SuiStandIn:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the stand-in Sui service did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(
            tornado.web.Application([(r"/graphql/?", _GraphQLHandler, {"node": self})])
        )
        server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/graphql"
        ready.set()
        await self._stopped.wait()
        server.stop()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(30)


class _GraphQLHandler(tornado.web.RequestHandler):
    def initialize(self, node: SuiStandIn) -> None:
        self.node = node

    def post(self) -> None:
        try:
            request = json.loads(self.request.body)
        except ValueError:
            self.set_status(400)
            self.finish({"errors": [{"message": "the body is not JSON"}]})
            return
        self.set_header("x-sui-rpc-version", RPC_VERSION)
        self.finish(self.node.answer(request))
