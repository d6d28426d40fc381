"""REST for a session's results (issue #16), under /walnut/sessions/<id>/results (errors as
in handlers.py):

    GET    ...   the session's `results`: {state, path, files, bytes, kept_until, reason, ...}
    POST   ...   "save results now": a running session's changed files are pulled into its
                 results folder now; an ended one's are fetched again if still pending
    DELETE ...   ask the provider to delete the results it keeps (the local copy stays)
"""

from __future__ import annotations

import json

from tornado import web

from .handlers import WalnutHandler


class ResultsHandler(WalnutHandler):
    @web.authenticated
    def get(self, session_id: str) -> None:
        s = self.walnut.get(session_id)
        self.finish(json.dumps({"results": s.extra.get("results"),
                                "warnings": self.walnut.warnings(s)}))

    @web.authenticated
    async def post(self, session_id: str) -> None:
        results = await self.walnut.results.save_now(session_id)
        self.finish(json.dumps({"results": results}))

    @web.authenticated
    async def delete(self, session_id: str) -> None:
        results = await self.walnut.results.drop(session_id)
        self.finish(json.dumps({"results": results}))


def results_handlers(sid: str) -> list[tuple[str, type]]:
    return [(rf"/walnut/sessions/{sid}/results", ResultsHandler)]
