"""The results of ended sessions over HTTP (results.py saves and keeps them):

    GET    /api/v1/sessions/<sid>/results          the manifest and its state (signed)
    GET    /api/v1/sessions/<sid>/results/archive  the files as .tar.gz (signed)
    DELETE /api/v1/sessions/<sid>/results          drop them now (signed)

Another renter's session looks exactly like a missing one (404)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..common.errors import Conflict, NotFound
from ..common.protocol import API
from .app import SESSION_ID, BaseHandler

if TYPE_CHECKING:
    from .node import ProviderNode


def results_of(node: ProviderNode, session_id: str, renter: str) -> dict:
    rec = node.sessions.owned(session_id, renter)  # another renter's: 404
    manifest = node.sessions.results.read(session_id)
    if manifest is None:
        if node.sessions.is_stopping(session_id):  # ended, its save under way: ask again
            state, reason = "saving", "the provider is saving the session's results"
        elif rec.status in ("starting", "running"):
            state, reason = "none", "the session has not ended"
        else:
            state, reason = "none", "no results were saved"
        return {"session_id": session_id, "state": state, "files": [], "left_out": [],
                "bytes": 0, "kept_until": None, "reason": reason}
    return manifest


class ResultsHandler(BaseHandler):
    def get(self, session_id: str) -> None:
        renter, _ = self.renter()
        self.write_json(results_of(self.node, session_id, renter))

    def delete(self, session_id: str) -> None:
        renter, _ = self.renter()
        results_of(self.node, session_id, renter)
        dropped = self.node.sessions.results.drop(session_id, "deleted",
                                                  "deleted at the renter's request")
        self.write_json(dropped or results_of(self.node, session_id, renter))


class ResultsArchiveHandler(BaseHandler):
    async def get(self, session_id: str) -> None:
        renter, _ = self.renter()
        manifest = results_of(self.node, session_id, renter)
        path = self.node.sessions.results.archive(session_id)
        if manifest["state"] != "saved":
            raise Conflict(f"no results to download: {manifest['state']}"
                           + (f" ({manifest['reason']})" if manifest.get("reason") else ""))
        try:
            fh = open(path, "rb")  # noqa: SIM115 - streamed below
        except FileNotFoundError as exc:
            raise NotFound("the results are gone") from exc
        self.set_header("Content-Type", "application/gzip")
        self.set_header("Content-Length", str(os.fstat(fh.fileno()).st_size))
        with fh:
            while block := fh.read(1 << 20):
                self.write(block)
                await self.flush()
        self.finish()


def routes() -> list[tuple[str, type]]:
    base = rf"{API}/sessions/{SESSION_ID}/results"
    return [(base, ResultsHandler), (rf"{base}/archive", ResultsArchiveHandler)]
