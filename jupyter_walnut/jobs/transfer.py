"""Moving Python variables between a local kernel and a remote one.

Format: one comm round trip per variable on the remote target `walnut.transfer`. A value
travels as a pickle (protocol 5) plus its out-of-band buffers as websocket binary buffers,
so a NumPy array crosses without base64 or an extra copy into the pickle stream.

Serializer "auto" (the default) uses cloudpickle when it is installed, which also moves
functions and classes defined in the notebook, else the standard pickle. Loading a
cloudpickled function needs cloudpickle on the other side too.
"""

from __future__ import annotations

import pickle
from typing import Any

from .kernel import RemoteKernel

TARGET = "walnut.transfer"
SERIALIZERS = ("auto", "pickle", "cloudpickle")
DEFAULT_LIMIT_BYTES = 200 * 1024 * 1024


class TransferError(Exception):
    """A variable that cannot move; the message is one line for the user."""


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def dumps(value: Any, serializer: str = "auto") -> tuple[str, list]:
    """(serializer used, [pickle bytes, *out-of-band buffers])."""
    if serializer not in SERIALIZERS:
        raise TransferError(f"unknown serializer {serializer!r}; use one of {SERIALIZERS}")
    use = serializer
    if serializer == "auto":
        try:
            import cloudpickle  # noqa: F401

            use = "cloudpickle"
        except ImportError:
            use = "pickle"
    if use == "cloudpickle":
        try:
            import cloudpickle
        except ImportError as exc:
            raise TransferError("serializer 'cloudpickle' needs `pip install cloudpickle`") \
                from exc
        dump = cloudpickle.dumps
    else:
        dump = pickle.dumps
    oob: list = []
    payload = dump(value, protocol=5, buffer_callback=oob.append)
    return use, [payload, *(b.raw() for b in oob)]


def loads(buffers: list) -> Any:
    # received buffers are read-only views; copies keep loaded arrays writable
    payload, oob = buffers[0], [bytearray(b) for b in buffers[1:]]
    return pickle.loads(payload, buffers=oob)


def size_of(buffers: list) -> int:
    return sum(memoryview(b).nbytes for b in buffers)


# Runs once in each remote kernel (silently): registers the comm target.
REMOTE_BOOTSTRAP = r'''
def __walnut_transfer_setup():
    import pickle

    def dumps(value, serializer):
        if serializer == "auto":
            try:
                import cloudpickle
                serializer = "cloudpickle"
            except ImportError:
                serializer = "pickle"
        dump = __import__("cloudpickle").dumps if serializer == "cloudpickle" else pickle.dumps
        oob = []
        payload = dump(value, protocol=5, buffer_callback=oob.append)
        return serializer, [payload] + [b.raw() for b in oob]

    def handler(comm, msg):
        data, bufs = msg["content"]["data"], msg["buffers"]
        ns = get_ipython().user_ns
        try:
            if data["op"] == "push":
                oob = [bytearray(b) for b in bufs[1:]]
                ns[data["name"]] = pickle.loads(bufs[0], buffers=oob)
                comm.send({"ok": True})
            else:
                name = data["name"]
                if name not in ns:
                    raise NameError(f"name {name!r} is not defined on the remote kernel")
                used, out = dumps(ns[name], data.get("serializer", "auto"))
                size = sum(memoryview(b).nbytes for b in out)
                if size > data["limit"]:
                    raise ValueError(f"{size / 1e6:.1f} MB is over the "
                                     f"{data['limit'] / 1e6:.0f} MB transfer limit")
                comm.send({"ok": True, "serializer": used, "size": size}, buffers=out)
        except Exception as exc:
            comm.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        comm.close()

    get_ipython().kernel.comm_manager.register_target("walnut.transfer", handler)

__walnut_transfer_setup()
del __walnut_transfer_setup
'''


async def setup(kernel: RemoteKernel) -> None:
    result = await kernel.execute(REMOTE_BOOTSTRAP, silent=True, store_history=False,
                                  timeout=60)
    if result.status != "ok":
        error = result.error or {}
        raise TransferError(f"could not prepare the remote kernel for transfers: "
                            f"{error.get('ename')}: {error.get('evalue')}")


async def push(kernel: RemoteKernel, name: str, value: Any, serializer: str = "auto",
               limit: int = DEFAULT_LIMIT_BYTES) -> int:
    """Send one variable; returns the bytes moved."""
    try:
        used, buffers = dumps(value, serializer)
    except TransferError:
        raise
    except Exception as exc:  # whatever pickling raises: a lock, a generator, a socket...
        hint = "" if serializer != "pickle" else " (try --serializer cloudpickle)"
        raise TransferError(f"cannot push {name!r}: {exc}{hint}") from exc
    size = size_of(buffers)
    if size > limit:
        raise TransferError(f"cannot push {name!r}: {_mb(size)} is over the "
                            f"{limit / 1e6:.0f} MB transfer limit")
    data, _ = await kernel.comm_call(TARGET, {"op": "push", "name": name, "serializer": used},
                                     buffers)
    if not data.get("ok"):
        raise TransferError(f"cannot load {name!r} on the remote kernel: {data.get('error')}")
    return size


async def pull(kernel: RemoteKernel, name: str, serializer: str = "auto",
               limit: int = DEFAULT_LIMIT_BYTES) -> tuple[Any, int]:
    """Fetch one variable; returns (value, bytes moved)."""
    data, buffers = await kernel.comm_call(
        TARGET, {"op": "pull", "name": name, "serializer": serializer, "limit": limit})
    if not data.get("ok"):
        raise TransferError(f"cannot pull {name!r}: {data.get('error')}")
    try:
        return loads(buffers), size_of(buffers)
    except Exception as exc:
        raise TransferError(f"cannot load {name!r} here: {type(exc).__name__}: {exc}") from exc
