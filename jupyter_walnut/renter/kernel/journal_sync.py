"""Outputs a remote kernel produced while this server was away, written into the notebook.

The session's gateway journals what each kernel emits per execute request (walnut_gateway
journal.py). When this server re-attaches a remote kernel after its own restart, it reads the
journal after the last seq it synced (kept per kernel in `<walnut home>/journal-sync.json`,
with the notebook the kernel was started for), rebuilds the outputs and execution count of
each request, and writes them into the cells they came from: by the frontend's cell id, else
by the request's code. The notebook is jupyter-collaboration's shared document when the
server runs it and has the notebook open, else the file (nbformat, validated, replaced
atomically).

The journal comes from the provider, so nothing in it is trusted: entries are type-checked,
outputs pass the same output policy as live ones (output_policy.py) unless the renter trusts
the provider, sizes are capped, and only the cell ids and counts of a valid notebook change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbformat import v4

from ..provider_client import ProviderAPIError
from .output_policy import sanitize

log = logging.getLogger("walnut.kernel.journal")

STATE_FILE = "journal-sync.json"
PAGE_BYTES = 4 << 20  # what one GET asks for (the gateway's own cap)
MAX_PAGES = 64
MAX_SYNC_BYTES = 64 << 20  # one sync reads at most the journal's own cap
MAX_TEXT = 1 << 20  # one output's text, as written into the notebook
MAX_CELL = 8 << 20  # one cell's outputs
MAX_OUTPUTS = 1000  # outputs of one cell
MAX_METADATA = 64 << 10
MAX_REQUESTS = 10_000
MAX_KERNELS = 256  # kernels remembered in the state file
MAX_SHOWN = 1000  # requests per kernel remembered as shown while attached
FOLLOW_S = 2.0  # while a request that ran away is still running, look again this often
FOLLOW_QUIET = 300
CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MSG_ID = re.compile(r"[\w.:-]{1,128}")
KINDS = {"request", "execute_input", "stream", "display_data", "execute_result", "error",
         "update_display_data", "clear_output", "status", "reply"}
STREAMS = {"stdout", "stderr"}
_lock = threading.Lock()
_tasks: set[asyncio.Task] = set()  # running syncs (the loop keeps only weak references)
SHOWN_FLUSH_S = 0.5
_shown: dict[Path, dict[str, list[str]]] = {}  # replies shown, not yet written, by home
_flushes: dict[Path, asyncio.TimerHandle] = {}


def marker(what: str) -> str:
    return f"\n[Walnut: {what} not kept]\n"


# --- state: the last seq synced and the notebook of each kernel ------------------------


def _load(home: Path) -> dict[str, dict]:
    try:
        data = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(home: Path, data: dict[str, dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".journal-sync.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, home / STATE_FILE)


def remember(home: Path, kernel_id: str, **changes: Any) -> dict:
    with _lock:
        data = _load(home)
        entry = {**data.get(kernel_id, {"seq": 0}), **changes}
        data.pop(kernel_id, None)
        data[kernel_id] = entry  # newest last: the oldest kernels are forgotten first
        _save(home, dict(list(data.items())[-MAX_KERNELS:]))
        return entry


def shown(provisioner: Any, msg_id: str) -> None:
    """A request whose reply reached this server's clients while it was attached: its
    outputs are the frontend's to keep, so a later sync leaves its cell alone (the user may
    have cleared or re-run it since). Written a moment later, many replies at once, so the
    reply itself never waits for the disk; one lost in a crash only gets its cell rewritten
    with the same outputs."""
    home = provisioner.renter.home
    pending = _shown.setdefault(home, {})
    pending.setdefault(provisioner.kernel_id, []).append(msg_id)
    if home not in _flushes:
        _flushes[home] = asyncio.get_running_loop().call_later(SHOWN_FLUSH_S, _flush_shown,
                                                               home)


def _flush_shown(home: Path) -> None:
    _flushes.pop(home, None)
    pending = _shown.pop(home, {})
    try:
        with _lock:
            data = _load(home)
            changed = False
            for kernel_id, ids in pending.items():
                entry = data.get(kernel_id)
                if entry is None:
                    continue
                seen = [m for m in entry.get("shown", []) if isinstance(m, str)]
                entry["shown"] = [*seen, *ids][-MAX_SHOWN:]
                changed = True
            if changed:
                _save(home, data)
    except OSError as exc:  # the kernel works without; a sync may then rewrite those cells
        log.warning("journal state not saved: %s", exc)


def state(home: Path, kernel_id: str) -> dict:
    with _lock:
        return dict(_load(home).get(kernel_id) or {"seq": 0})


def notebook_of_env(env: dict | None) -> str | None:
    """The notebook a kernel is started for: jupyter_server's JPY_SESSION_NAME."""
    name = (env or {}).get("JPY_SESSION_NAME")
    return name if isinstance(name, str) and name.endswith(".ipynb") else None


# --- reading the journal ------------------------------------------------------------------


@dataclass
class Request:
    msg_id: str
    first_seq: int = 0
    cell_id: str | None = None
    code: str | None = None
    execution_count: int | None = None
    outputs: list[dict] = field(default_factory=list)
    size: int = 0
    full: bool = False
    clear_pending: bool = False
    done: bool = False


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 < value < 2**31 else None


def _text(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "".join(value)
    return value if isinstance(value, str) else ""


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + marker(
        f"{len(text) - limit} more characters of this output were")


def _bundle(content: dict, msg_type: str, trusted: bool) -> tuple[dict, dict]:
    """(data, metadata) of a display message, after the output policy, with text cut."""
    if not trusted:
        content = sanitize(msg_type, content)
    data = content.get("data")
    out: dict[str, Any] = {}
    for mime, value in (data if isinstance(data, dict) else {}).items():
        if not isinstance(mime, str) or len(mime) > 255:
            continue
        if isinstance(value, str):
            out[mime] = _cut(value)
        elif isinstance(value, (dict, list)) and len(json.dumps(value)) <= MAX_TEXT:
            out[mime] = value
    if not out:
        out["text/plain"] = "[Walnut: an output with nothing that can be shown]"
    metadata = content.get("metadata")
    if not isinstance(metadata, dict) or len(json.dumps(metadata, default=str)) > MAX_METADATA:
        metadata = {}
    return out, json.loads(json.dumps(metadata, default=str))


def _display_id(content: dict) -> str | None:
    transient = content.get("transient")
    value = transient.get("display_id") if isinstance(transient, dict) else None
    return value if isinstance(value, str) and len(value) <= 256 else None


def _add(request: Request, output: dict) -> None:
    if request.full:
        return
    if request.clear_pending:
        request.outputs, request.size, request.clear_pending = [], 0, False
    size = len(json.dumps(output))
    if request.size + size > MAX_CELL or len(request.outputs) >= MAX_OUTPUTS:
        request.outputs.append(v4.new_output("stream", name="stderr",
                                             text=marker("the rest of this cell's outputs were")))
        request.full = True
        return
    last = request.outputs[-1] if request.outputs else None
    if (output["output_type"] == "stream" and last is not None
            and last.get("output_type") == "stream" and last["name"] == output["name"]
            and len(last["text"]) + len(output["text"]) <= MAX_TEXT):
        last["text"] += output["text"]  # as JupyterLab merges a stream's chunks
    else:
        request.outputs.append(output)
    request.size += size


def apply_entry(request: Request, kind: str, content: dict, trusted: bool) -> None:
    """One journal entry into the request's rebuilt outputs."""
    if kind == "request":
        cell_id = content.get("cell_id")
        request.cell_id = cell_id if isinstance(cell_id, str) and CELL_ID.fullmatch(cell_id) \
            else request.cell_id
        code = content.get("code")
        request.code = code if isinstance(code, str) else request.code
    elif kind == "execute_input":
        request.execution_count = _count(content.get("execution_count"))
        if request.code is None and isinstance(content.get("code"), str):
            request.code = content["code"]
    elif kind == "reply":
        request.done = True
        request.execution_count = _count(content.get("execution_count")) \
            or request.execution_count
    elif kind == "stream":
        name = content.get("name")
        text = _text(content.get("text"))
        if name in STREAMS and text:
            _add(request, v4.new_output("stream", name=name, text=_cut(text)))
    elif kind in ("display_data", "execute_result"):
        data, metadata = _bundle(content, kind, trusted)
        if kind == "execute_result":
            output = v4.new_output("execute_result", data=data, metadata=metadata,
                                   execution_count=_count(content.get("execution_count"))
                                   or request.execution_count)
        else:
            output = v4.new_output("display_data", data=data, metadata=metadata)
        display_id = _display_id(content)
        if display_id:
            output.setdefault("transient", {})["display_id"] = display_id  # dropped on write
        _add(request, output)
    elif kind == "update_display_data":
        display_id = _display_id(content)
        data, metadata = _bundle(content, kind, trusted)
        for output in request.outputs:
            if display_id and output.get("transient", {}).get("display_id") == display_id:
                output["data"], output["metadata"] = data, metadata
    elif kind == "error":
        traceback = content.get("traceback")
        frames = [_cut(f, 64 << 10) for f in traceback if isinstance(f, str)][:200] \
            if isinstance(traceback, list) else []
        _add(request, v4.new_output("error", ename=_cut(_text(content.get("ename")), 1024),
                                    evalue=_cut(_text(content.get("evalue")), 64 << 10),
                                    traceback=frames))
    elif kind == "clear_output":
        if content.get("wait") is True:
            request.clear_pending = True
        else:
            request.outputs, request.size, request.full = [], 0, False


@dataclass
class Batch:
    requests: dict[str, Request] = field(default_factory=dict)
    last_seq: int = 0
    resume_seq: int = 0  # where the next sync starts: before any request still running


async def read_journal(fetch, kernel_id: str, after: int, trusted: bool) -> Batch:
    """The journal's entries after `after`, as rebuilt requests. `fetch(path)` is a GET
    through the provider's gateway proxy; every entry is checked, and a journal that goes
    backwards or will not end stops the reading there."""
    batch = Batch(last_seq=after, resume_seq=after)
    read = 0
    for _ in range(MAX_PAGES):
        answer = await fetch(f"walnut/journal/{kernel_id}?after={batch.last_seq}"
                             f"&limit={PAGE_BYTES}")
        if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
            raise ValueError("the journal answer is not an object with entries")
        entries = answer["entries"]
        read += len(json.dumps(entries))
        progressed = False
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            seq, msg_id, kind = entry.get("seq"), entry.get("msg_id"), entry.get("type")
            content = entry.get("content")
            if _count(seq) is None or seq <= batch.last_seq:
                continue  # numbering must go forward: a replay or a loop is not followed
            batch.last_seq, progressed = seq, True
            if not (isinstance(msg_id, str) and MSG_ID.fullmatch(msg_id)
                    and kind in KINDS and isinstance(content, dict)):
                continue
            request = batch.requests.get(msg_id)
            if request is None:
                if kind not in ("request", "execute_input") \
                        or len(batch.requests) >= MAX_REQUESTS:
                    continue  # began before `after`: written by an earlier sync
                request = batch.requests[msg_id] = Request(msg_id, seq)
            apply_entry(request, kind, content, trusted)
        if not answer.get("more") or not progressed or read > MAX_SYNC_BYTES:
            break
    # the next sync starts before the first request still running, to rebuild it whole
    running = [r.first_seq for r in batch.requests.values() if not r.done]
    batch.resume_seq = min(running) - 1 if running else batch.last_seq
    return batch


# --- writing the notebook -------------------------------------------------------------


def _match(cells: list, request: Request, taken: set[int]) -> int | None:
    code_cells = [(i, c) for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    if request.cell_id:
        for i, cell in code_cells:
            if cell.get("id") == request.cell_id:
                return i
    if request.code is not None:
        for i, cell in reversed(code_cells):
            if i not in taken and _text(cell.get("source")) == request.code:
                return i
    return None


def _plain(output: dict) -> dict:
    return {k: v for k, v in output.items() if k != "transient"}


def fill(cells: list, requests: list[Request]) -> list[tuple[int, Request]]:
    """Which cell each request's outputs go to, later requests winning a cell."""
    taken: dict[int, Request] = {}
    for request in requests:
        index = _match(cells, request, set(taken))
        if index is not None:
            taken[index] = request
    return sorted(taken.items())


def write_file(os_path: Path, requests: list[Request]) -> int:
    """Into the notebook file: validated, then replaced atomically. Returns cells changed."""
    nb = nbformat.read(os_path, as_version=4)
    matched = fill(nb.cells, requests)
    for index, request in matched:
        cell = nb.cells[index]
        cell.outputs = [nbformat.from_dict(_plain(o)) for o in request.outputs]
        cell.execution_count = request.execution_count
    if not matched:
        return 0
    nbformat.validate(nb)
    fd, tmp = tempfile.mkstemp(dir=os_path.parent, prefix=f".{os_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        with contextlib.suppress(OSError):
            os.chmod(tmp, os_path.stat().st_mode & 0o777)
        os.replace(tmp, os_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(matched)


async def write_shared(serverapp: Any, path: str, requests: list[Request]) -> int | None:
    """Into jupyter-collaboration's shared document of the notebook, when the server runs it
    and has it open; None otherwise (the file is written instead)."""
    ydoc = (getattr(serverapp, "web_app", None) and serverapp.web_app.settings.get(
        "jupyter_server_ydoc"))
    if not ydoc or not hasattr(ydoc, "get_document"):
        return None
    try:
        doc = await ydoc.get_document(path=path, content_type="notebook", file_format="json",
                                      copy=False)
    except Exception as exc:  # not open in a room, or another version's API
        log.info("no shared document for %s: %s", path, exc)
        return None
    if doc is None:
        return None
    cells = [doc.get_cell(i) for i in range(doc.cell_number)]
    matched = fill(cells, requests)
    for index, request in matched:
        cell = dict(cells[index])
        cell["outputs"] = [_plain(o) for o in request.outputs]
        cell["execution_count"] = request.execution_count
        doc.set_cell(index, cell)
    return len(matched)


# --- the sync after a re-attach -----------------------------------------------------------


def _serverapp(provisioner: Any) -> Any:
    node = provisioner
    for _ in range(4):
        node = getattr(node, "parent", None)
        if node is None:
            return None
        if hasattr(node, "session_manager") and hasattr(node, "root_dir"):
            return node
    return None


async def _notebook_path(serverapp: Any, kernel_id: str, remembered: str | None
                         ) -> str | None:
    """The notebook's API path: the server's session of this kernel, else the one the
    kernel was started for."""
    with contextlib.suppress(Exception):
        for model in await serverapp.session_manager.list_sessions():
            if (model.get("kernel") or {}).get("id") == kernel_id and \
                    str(model.get("path", "")).endswith(".ipynb"):
                return model["path"]
    return remembered


def os_path_of(root: str, path: str) -> Path | None:
    """The notebook's file under the server's root, or None if it is not inside it."""
    root_path = Path(root).resolve()
    candidate = Path(path) if os.path.isabs(path) else root_path / path.lstrip("/")
    try:
        real = candidate.resolve()
        real.relative_to(root_path)
    except (OSError, ValueError):
        return None
    return real if real.suffix == ".ipynb" and real.is_file() else None


async def sync_once(provisioner: Any, fetch, trusted: bool) -> Batch | None:
    home = provisioner.renter.home
    kernel_id = provisioner.kernel_id
    known = state(home, kernel_id)
    serverapp = _serverapp(provisioner)
    path = await _notebook_path(serverapp, kernel_id, known.get("path")) if serverapp \
        else known.get("path")
    seq = _count(known.get("seq")) or 0
    try:
        batch = await read_journal(fetch, provisioner.remote_kernel_id, seq, trusted)
    except (ProviderAPIError, ValueError) as exc:
        log.warning("journal of kernel %s not read: %s", kernel_id, exc)
        return None
    seen = set(known.get("shown") or ())
    requests = [r for r in batch.requests.values() if r.msg_id not in seen]
    if requests and path and serverapp is not None:
        relative = path
        os_path = os_path_of(serverapp.root_dir, path)
        if os_path is not None:
            relative = os_path.relative_to(Path(serverapp.root_dir).resolve()).as_posix()
        changed = await write_shared(serverapp, relative, requests)
        shared = changed is not None
        if changed is None and os_path is not None:
            try:
                changed = await asyncio.to_thread(write_file, os_path, requests)
            except (OSError, ValueError, nbformat.ValidationError) as exc:
                log.warning("outputs of kernel %s not written into %s: %s", kernel_id, path,
                            exc)
                return batch
        log.info("wrote %s cell(s) of %s from the journal of kernel %s", changed, path,
                 kernel_id)
        if changed and os_path is not None and not shared:  # a shared document shows it live
            provisioner.renter.note_outputs_written(provisioner.walnut_session, relative)
    remember(home, kernel_id, seq=batch.resume_seq, **({"path": path} if path else {}))
    return batch


async def follow(provisioner: Any, fetch, trusted: bool) -> None:
    """Sync now, and again while a request that ran away is still running (until its
    journal stops moving for FOLLOW_QUIET polls: a kernel that died mid-cell)."""
    last, quiet = -1, 0
    try:
        while provisioner.bridge is not None and quiet < FOLLOW_QUIET:
            batch = await sync_once(provisioner, fetch, trusted)
            if batch is None or all(r.done for r in batch.requests.values()):
                return
            quiet = quiet + 1 if batch.last_seq == last else 0
            last = batch.last_seq
            await asyncio.sleep(FOLLOW_S)
    except Exception:
        log.exception("journal sync of kernel %s failed", provisioner.kernel_id)


def attached(provisioner: Any, env: dict | None, trusted: bool) -> None:
    """Hook of the provisioner once its bridge is up: a kernel seen for the first time notes
    its notebook; a re-attached one (noted before) brings in what its journal holds since
    the last sync."""
    home = provisioner.renter.home
    with _lock:
        known = provisioner.kernel_id in _load(home)
    if not known:
        try:
            remember(home, provisioner.kernel_id, seq=0, path=notebook_of_env(env))
        except OSError as exc:  # the kernel works without; only the sync is lost
            log.warning("journal state not saved: %s", exc)
        return

    async def fetch(path: str) -> Any:
        return await provisioner._gateway("GET", path)

    task = asyncio.ensure_future(follow(provisioner, fetch, trusted))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
