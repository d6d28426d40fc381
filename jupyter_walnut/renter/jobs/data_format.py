"""Walnut's data-only transfer format: values that load without running any code.

    parts[0]   UTF-8 JSON: the value tree
    parts[1:]  raw parts the tree refers to by index: bytes, .npy files, Arrow IPC streams

The tree: None, bool, int (exact, any size), float and str are JSON values; a list is a
JSON array; everything else is an object {"t": TAG, ...}:

    {"t": "tuple" | "set" | "frozenset", "v": [...]}     {"t": "dict", "v": [[key, value]]}
    {"t": "bytes", "b": i}      {"t": "ndarray", "b": i} (np.save, never object dtype)
    {"t": "npscalar", "b": i}   {"t": "dataframe", "b": i} (Arrow IPC stream)
    {"t": "series", "b": i, "name": tree}

Loading never unpickles: a .npy part is read by NumPy's header reader, never with object
dtype, and must be exactly as long as its header says; an Arrow stream is validated in full
before pandas sees it.
This module is also sent as source to remote kernels (jobs/transfer.py), so at the top it
imports only the standard library; NumPy, pandas and pyarrow load when a value needs them.
"""

from __future__ import annotations

import io
import json
import math
import sys
import warnings
from typing import Any

MAX_DEPTH = 64
SCALARS = (type(None), bool, int, float, str)
SEQUENCES = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}
SERIES_COLUMN = "walnut_series"
MAX_NPY_HEADER = 65536  # NumPy itself reads at most 10,000 bytes of header


class DataError(ValueError):
    """A value that is not data, or parts that do not decode as data; one line. Not a
    WalnutError: this module runs in remote kernels too, importing only the standard
    library; the renter reports it as a TransferError."""


def type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else \
        f"{cls.__module__}.{cls.__qualname__}"


def _loaded(module: str) -> Any:
    """A module the value's own type proves is loaded here (never imported for it)."""
    return sys.modules.get(module)


# --- encoding -------------------------------------------------------------------------------

def dumps(value: Any, where: str = "value") -> list[bytes | memoryview]:
    """[tree JSON, *parts]; raises DataError naming the first part that is not data."""
    parts: list[bytes | memoryview] = []
    tree = _encode(value, parts, where, 0)
    return [json.dumps(tree, separators=(",", ":")).encode(), *parts]


def _encode(v: Any, parts: list, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise DataError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    cls = type(v)
    if cls in SCALARS:
        return v
    if cls is list:
        return [_encode(x, parts, f"{where}[{i}]", depth + 1) for i, x in enumerate(v)]
    if cls in SEQUENCES:
        return {"t": SEQUENCES[cls],
                "v": [_encode(x, parts, f"{where}[{i}]", depth + 1) for i, x in enumerate(v)]}
    if cls is dict:
        return {"t": "dict", "v": [[_encode(k, parts, f"{where} key {k!r:.40}", depth + 1),
                                    _encode(x, parts, f"{where}[{k!r:.40}]", depth + 1)]
                                   for k, x in v.items()]}
    if cls in (bytes, bytearray):
        parts.append(bytes(v))
        return {"t": "bytes", "b": len(parts)}
    np, pd = _loaded("numpy"), _loaded("pandas")
    if np is not None and isinstance(v, np.ndarray | np.generic):
        if v.dtype.hasobject:
            raise DataError(f"{where} is a NumPy array of Python objects (dtype object)")
        parts.append(_npy(np, v))
        return {"t": "ndarray" if isinstance(v, np.ndarray) else "npscalar", "b": len(parts)}
    if pd is not None and isinstance(v, pd.DataFrame | pd.Series):
        is_series = isinstance(v, pd.Series)
        frame = v.to_frame(SERIES_COLUMN) if is_series else v
        parts.append(_arrow(frame, where))
        node = {"t": "series" if is_series else "dataframe", "b": len(parts)}
        if is_series:
            node["name"] = _encode(v.name, parts, f"{where}.name", depth + 1)
        return node
    raise DataError(f"{where} is of type {type_name(v)}")


def _npy(np: Any, array: Any) -> memoryview:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getbuffer()


def _arrow(frame: Any, where: str) -> bytes:
    try:
        import pyarrow as pa  # noqa: PLC0415  (optional: this source also runs in remote kernels)
    except ImportError as exc:
        raise DataError(f"{where} is a pandas object and moving it needs pyarrow "
                        "(pip install pyarrow) on both sides") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Arrow warns where it would not round-trip
            table = pa.Table.from_pandas(frame, preserve_index=True)
    except UserWarning as exc:
        raise DataError(f"{where} would not come back exactly: {exc}") from exc
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise DataError(f"{where} has a column Arrow cannot store as data: {exc}") from exc
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# --- decoding -------------------------------------------------------------------------------

def loads(parts: list, limit: int) -> Any:
    """The value `parts` encode; DataError when they are anything but this format."""
    if not parts:
        raise DataError("nothing was sent")
    if sum(memoryview(p).nbytes for p in parts) > limit:
        raise DataError(f"more than the {limit / 1e6:.0f} MB transfer limit was sent")
    try:
        tree = json.loads(bytes(parts[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError("what was sent is not Walnut data (perhaps a pickle)") from exc
    return _decode(tree, parts, 0, limit)


def _decode(node: Any, parts: list, depth: int, limit: int) -> Any:
    if depth > MAX_DEPTH:
        raise DataError(f"the value is nested more than {MAX_DEPTH} levels deep")
    if type(node) in SCALARS:
        return node
    if type(node) is list:
        return [_decode(x, parts, depth + 1, limit) for x in node]
    if type(node) is not dict or not isinstance(node.get("t"), str):
        raise DataError("the value tree holds an unknown node")
    tag = node["t"]
    if tag in ("tuple", "set", "frozenset", "dict"):
        items = node.get("v")
        if type(items) is not list:
            raise DataError(f"a {tag} without items")
        values = [_decode(x, parts, depth + 1, limit) for x in items]
        try:
            if tag == "dict":
                return {k: x for k, x in (_pair(p) for p in values)}
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](values)
        except TypeError as exc:  # an unhashable key or member
            raise DataError(f"a {tag} with an unhashable member: {exc}") from exc
    raw = _part(node, parts)
    if tag == "bytes":
        return bytes(raw)
    if tag in ("ndarray", "npscalar"):
        array = _load_npy(raw)
        return array if tag == "ndarray" else array[()]
    if tag in ("dataframe", "series"):
        frame = _load_arrow(raw, limit)
        if tag == "dataframe":
            return frame
        if list(frame.columns) != [SERIES_COLUMN]:
            raise DataError("a series part with other columns")
        return frame[SERIES_COLUMN].rename(_decode(node.get("name"), parts, depth + 1, limit))
    raise DataError(f"the value tree holds an unknown node {tag[:20]!r}")


def _pair(item: Any) -> tuple[Any, Any]:
    if type(item) is not list or len(item) != 2:
        raise DataError("a dict item that is not a [key, value] pair")
    return item[0], item[1]


def _part(node: dict, parts: list) -> memoryview:
    index = node.get("b")
    if type(index) is not int or not 1 <= index < len(parts):
        raise DataError("the value tree refers to a part that was not sent")
    return memoryview(parts[index]).cast("B")


def _load_npy(raw: memoryview) -> Any:
    try:
        import numpy as np  # noqa: PLC0415  (optional: this source also runs in remote kernels)
    except ImportError as exc:
        raise DataError("the value holds a NumPy array; install numpy here") from exc
    fmt = np.lib.format
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    fp = io.BytesIO(raw[:MAX_NPY_HEADER])  # only the header: the data is copied once below
    try:
        version = fmt.read_magic(fp)
        if version not in readers:
            raise DataError(f"a .npy part of unsupported version {version}")
        shape, fortran, dtype = readers[version](fp)
        if dtype.hasobject:
            raise DataError("a NumPy array of Python objects (dtype object) was sent")
        count = math.prod(shape)
        if fp.tell() + count * dtype.itemsize != raw.nbytes:
            raise DataError("a .npy part whose size does not match its header")
        # what np.load(allow_pickle=False) does, with one copy out of the received buffer
        flat = np.frombuffer(raw, dtype=dtype, count=count, offset=fp.tell())
        return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")
    except DataError:
        raise
    except (ValueError, TypeError, OverflowError, EOFError) as exc:
        raise DataError(f"a .npy part that does not load: {exc}") from exc


def _load_arrow(raw: memoryview, limit: int) -> Any:
    try:
        import pyarrow as pa  # noqa: PLC0415  (optional: this source also runs in remote kernels)
    except ImportError as exc:
        raise DataError("the value holds a pandas object; install pandas and pyarrow "
                        "here") from exc
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(raw))
        batches, total = [], 0
        for batch in reader:  # batch by batch, so a stream cannot grow past the limit
            total += batch.nbytes
            if total > limit:
                raise DataError(f"a table over the {limit / 1e6:.0f} MB transfer limit")
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema=reader.schema)
        table.validate(full=True)
        return table.to_pandas()
    except DataError:
        raise
    except (pa.ArrowException, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"an Arrow part that does not load: {exc}") from exc
