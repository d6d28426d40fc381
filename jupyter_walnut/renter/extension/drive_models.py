"""What a session's Contents API may send to the renter's JupyterLab, checked field by field.

The provider is hostile: a notebook model coming back has every cell's `metadata.trusted`
forced false (JupyterLab runs a trusted cell's HTML and JavaScript outputs on the Jupyter
origin), names carry no '/', paths no '..', sizes are integers and types are the three
Contents types. Anything else is a 502 with a message, never passed through."""

from __future__ import annotations

from typing import Any

from ...common.errors import BadRequest, StatusError

TYPES = ("file", "directory", "notebook")
FORMATS = (None, "json", "text", "base64")
MAX_NAME = 255
MAX_PATH = 4096
MAX_ENTRIES = 20_000  # a directory listing; bigger folders are for %walnut pull
_TEXT_FIELDS = ("created", "last_modified", "mimetype", "hash", "hash_algorithm")


class BadModel(StatusError):
    """The session's gateway (the provider) sent a model we refuse to show."""

    def __init__(self, message: str) -> None:
        super().__init__(502, f"the session sent a bad file model: {message}")


def check_request_path(path: str) -> str:
    """A workspace path the browser names (URL-decoded, '/'-separated): relative, no '..',
    no empty segment, no control character. '' is the workspace itself."""
    path = path.strip("/")
    if len(path) > MAX_PATH:
        raise BadRequest("path too long")
    if path and not _clean_segments(path):
        raise BadRequest(f"bad path {path[:200]!r}: relative names without '..' only")
    return path


def _clean_segments(path: str) -> bool:
    return all(seg not in ("", ".", "..") and len(seg) <= MAX_NAME
               and not any(ord(c) < 32 or c == "\x7f" for c in seg)
               for seg in path.split("/"))


def _text(model: dict, key: str) -> str | None:
    value = model.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise BadModel(f"{key} is not a short string")
    return value


def _integer(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadModel(f"{key} is not a size")
    return value


def untrust_notebook(content: Any) -> dict:
    """The notebook with no cell trusted, whatever the provider's file or signature says."""
    if not isinstance(content, dict) or not isinstance(content.get("cells"), list):
        raise BadModel("notebook content is not a notebook")
    metadata = content.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    metadata.pop("signature", None)
    cells = []
    for cell in content["cells"]:
        if not isinstance(cell, dict):
            raise BadModel("a notebook cell is not an object")
        cell_meta = cell.get("metadata")
        cell_meta = dict(cell_meta) if isinstance(cell_meta, dict) else {}
        cell_meta["trusted"] = False
        cells.append({**cell, "metadata": cell_meta})
    return {**content, "metadata": metadata, "cells": cells}


def clean_model(model: Any, parent: str | None = None) -> dict:
    """One Contents model, rebuilt from the fields JupyterLab reads (no `trusted` flag).
    `parent`: the directory it was listed in, whose child it must be."""
    if not isinstance(model, dict):
        raise BadModel("not an object")
    name, path, kind = model.get("name"), model.get("path"), model.get("type")
    if not isinstance(name, str) or "/" in name or len(name) > MAX_NAME:
        raise BadModel("name is not a file name")
    if not isinstance(path, str) or len(path) > MAX_PATH or (
            path and not _clean_segments(path)):
        raise BadModel("path is not a workspace path")
    if path and path.rsplit("/", 1)[-1] != name:
        raise BadModel("name and path disagree")
    if parent is not None and path != (f"{parent}/{name}" if parent else name):
        raise BadModel(f"{path[:200]!r} listed outside its folder")
    if kind not in TYPES:
        raise BadModel("type is not file, directory or notebook")
    fmt = model.get("format")
    if fmt not in FORMATS:
        raise BadModel("format is not json, text or base64")
    writable = model.get("writable", True)
    if not isinstance(writable, bool):
        raise BadModel("writable is not a boolean")
    out: dict[str, Any] = {"name": name, "path": path, "type": kind, "format": fmt,
                           "writable": writable, "size": _integer(model.get("size"), "size")}
    for key in _TEXT_FIELDS:
        out[key] = _text(model, key)
    out["content"] = _content(kind, fmt, model.get("content"), path, parent is not None)
    return out


def _content(kind: str, fmt: str | None, content: Any, path: str, listed: bool) -> Any:
    if content is None:
        return None
    if listed:
        raise BadModel("a listed entry carries content")
    if kind == "directory":
        if not isinstance(content, list) or len(content) > MAX_ENTRIES:
            raise BadModel(f"a folder listing is not a list of at most {MAX_ENTRIES}")
        return [clean_model(child, parent=path) for child in content]
    if kind == "notebook":
        return untrust_notebook(content)
    if not isinstance(content, str):
        raise BadModel("file content is not a string")
    return content


def clean_checkpoints(value: Any) -> Any:
    """A checkpoint model, or a list of them: {"id", "last_modified"}, short strings."""
    if isinstance(value, list):
        return [clean_checkpoints(v) for v in value[:1000]]
    if not isinstance(value, dict):
        raise BadModel("a checkpoint is not an object")
    return {"id": _text(value, "id"), "last_modified": _text(value, "last_modified")}
