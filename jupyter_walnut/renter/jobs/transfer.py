"""Moving Python variables between a local kernel and a remote one.

One comm round trip per variable on the remote target `walnut.transfer`; a value travels
as websocket binary buffers, so a NumPy array crosses without base64.

Pulling brings back what the provider's kernel sends, and the provider controls that kernel:
by default a pull accepts only Walnut's data-only format (jobs/data_format.py: plain values,
NumPy arrays, pandas DataFrames and Series), which loads without running code. Unpickling a
pull (`--serializer pickle` or `cloudpickle`) would run whatever code the provider put in it,
so it is an explicit opt-in that prints a warning each time.

Pushing sends the renter's own values into the renter's own session, where the renter's code
runs anyway: a push uses the data format when it can and falls back to cloudpickle (or
pickle) for everything else, such as functions and classes defined in the notebook.
"""

from __future__ import annotations

import pickle
from importlib import resources
from typing import TYPE_CHECKING, Any

from ...common.errors import BadRequest
from . import data_format
from .data_format import DataError

if TYPE_CHECKING:
    from ...common.remote_kernel import RemoteKernel

TARGET = "walnut.transfer"
SERIALIZERS = ("data", "pickle", "cloudpickle")
DEFAULT_LIMIT_BYTES = 200 * 1024 * 1024
MAX_REMOTE_ERROR = 300
PICKLE_HINT = ("only plain values, NumPy arrays and pandas DataFrames/Series come back as "
               "data; `--serializer pickle` brings anything back by unpickling it, which "
               "lets the provider run code on this machine: use it only with a provider you "
               "trust")


class TransferError(BadRequest):
    """A variable that cannot move; the message is one line for the user."""


def unsafe_pull_warning(serializer: str) -> str:
    return (f"walnut: warning: --serializer {serializer} unpickles what the provider's kernel "
            "sends, and a hostile provider can run any code on this machine through it; "
            "use it only with a provider you trust")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _pickler(serializer: str):
    if serializer == "cloudpickle":
        try:
            import cloudpickle  # noqa: PLC0415  (optional: the magics extra; plain pickle without it)
        except ImportError:
            return pickle.dumps
        return cloudpickle.dumps
    return pickle.dumps


def pickled(value: Any, serializer: str) -> list:
    """[pickle bytes (protocol 5), *out-of-band buffers]."""
    oob: list = []
    payload = _pickler(serializer)(value, protocol=5, buffer_callback=oob.append)
    return [payload, *(b.raw() for b in oob)]


def encode_push(value: Any, name: str, serializer: str = "data") -> tuple[str, list]:
    """(format sent, buffers): data when the value is data, else a pickle (see above)."""
    if serializer not in SERIALIZERS:
        raise TransferError(f"unknown serializer {serializer!r}; use one of {SERIALIZERS}")
    if serializer == "data":
        try:
            return "data", data_format.dumps(value, name)
        except DataError:
            serializer = "cloudpickle"  # the renter's own value into its own session
    return "pickle", pickled(value, serializer)


def decode_pull(buffers: list, serializer: str, limit: int) -> Any:
    """What the provider's kernel sent, decoded the way the renter asked (never the way the
    remote side claims)."""
    if serializer == "data":
        return data_format.loads(buffers, limit)
    if size_of(buffers) > limit or not buffers:
        raise DataError(f"more than the {limit / 1e6:.0f} MB transfer limit was sent")
    # received buffers are read-only views; copies keep loaded arrays writable
    return pickle.loads(buffers[0], buffers=[bytearray(b) for b in buffers[1:]])


def size_of(buffers: list) -> int:
    return sum(memoryview(b).nbytes for b in buffers)


def _remote_error(data: dict) -> str:
    text = " ".join(str(data.get("error") or "the remote kernel gave no reason").split())
    return text[:MAX_REMOTE_ERROR]


# Runs once in each remote kernel (silently): registers the comm target. The data format's
# own module travels as source, so both sides encode and decode with the same code.
_REMOTE_HANDLER = r'''
def __walnut_transfer_setup(codec_source):
    import pickle

    codec = {"__name__": "walnut_data_format"}
    exec(compile(codec_source, "walnut_data_format", "exec"), codec)

    def pickled(value, serializer):
        dump = pickle.dumps
        if serializer == "cloudpickle":
            try:
                dump = __import__("cloudpickle").dumps
            except ImportError:
                pass
        oob = []
        payload = dump(value, protocol=5, buffer_callback=oob.append)
        return [payload] + [b.raw() for b in oob]

    def handler(comm, msg):
        data, bufs = msg["content"]["data"], msg["buffers"]
        ns = get_ipython().user_ns
        name = data["name"]
        try:
            if data["op"] == "push":
                if data.get("format") == "data":
                    ns[name] = codec["loads"](bufs, 1 << 40)
                else:
                    oob = [bytearray(b) for b in bufs[1:]]
                    ns[name] = pickle.loads(bufs[0], buffers=oob)
                comm.send({"ok": True})
            else:
                if name not in ns:
                    raise NameError(f"name {name!r} is not defined on the remote kernel")
                if data.get("format") == "data":
                    out = codec["dumps"](ns[name], name)
                else:
                    out = pickled(ns[name], data.get("format"))
                size = sum(memoryview(b).nbytes for b in out)
                if size > data["limit"]:
                    raise ValueError(f"{size / 1e6:.1f} MB is over the "
                                     f"{data['limit'] / 1e6:.0f} MB transfer limit")
                comm.send({"ok": True, "size": size}, buffers=out)
        except codec["DataError"] as exc:
            comm.send({"ok": False, "not_data": True, "error": str(exc)})
        except Exception as exc:
            comm.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        comm.close()

    get_ipython().kernel.comm_manager.register_target("walnut.transfer", handler)
'''


def remote_bootstrap() -> str:
    source = resources.files(__package__).joinpath("data_format.py").read_text()
    return (_REMOTE_HANDLER + f"\n__walnut_transfer_setup({source!r})\n"
            "del __walnut_transfer_setup\n")


async def setup(kernel: RemoteKernel) -> None:
    result = await kernel.execute(remote_bootstrap(), silent=True, store_history=False,
                                  timeout=60)
    if result.status != "ok":
        error = result.error or {}
        raise TransferError(f"could not prepare the remote kernel for transfers: "
                            f"{error.get('ename')}: {error.get('evalue')}")


async def push(kernel: RemoteKernel, name: str, value: Any, serializer: str = "data",
               limit: int = DEFAULT_LIMIT_BYTES) -> int:
    """Send one variable; returns the bytes moved."""
    try:
        used, buffers = encode_push(value, name, serializer)
    except TransferError:
        raise
    except Exception as exc:  # whatever pickling raises: a lock, a generator, a socket...
        raise TransferError(f"cannot push {name!r}: {exc}") from exc
    size = size_of(buffers)
    if size > limit:
        raise TransferError(f"cannot push {name!r}: {_mb(size)} is over the "
                            f"{limit / 1e6:.0f} MB transfer limit")
    data, _ = await kernel.comm_call(TARGET, {"op": "push", "name": name, "format": used},
                                     buffers, timeout=kernel.timeout)
    if not data.get("ok"):
        raise TransferError(f"cannot load {name!r} on the remote kernel: {_remote_error(data)}")
    return size


async def pull(kernel: RemoteKernel, name: str, serializer: str = "data",
               limit: int = DEFAULT_LIMIT_BYTES) -> tuple[Any, int]:
    """Fetch one variable; returns (value, bytes moved)."""
    if serializer not in SERIALIZERS:
        raise TransferError(f"unknown serializer {serializer!r}; use one of {SERIALIZERS}")
    data, buffers = await kernel.comm_call(  # a kernel that never answers cannot hang us
        TARGET, {"op": "pull", "name": name, "format": serializer, "limit": limit},
        timeout=kernel.timeout)
    if not data.get("ok"):
        hint = f"; {PICKLE_HINT}" if data.get("not_data") and serializer == "data" else ""
        raise TransferError(f"cannot pull {name!r}: {_remote_error(data)}{hint}")
    try:
        return decode_pull(buffers, serializer, limit), size_of(buffers)
    except DataError as exc:
        raise TransferError(f"cannot pull {name!r}: the provider sent data that does not "
                            f"load as data: {exc}; nothing was loaded") from exc
    except Exception as exc:  # only reached with an opted-in pickle
        raise TransferError(f"cannot load {name!r} here: {type(exc).__name__}: {exc}") from exc
