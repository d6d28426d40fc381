"""REST handlers under /walnut/: thin glue over `RenterManager`, errors mapped in one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ...common.errors import BadRequest, WalnutError
from ...common.numbers import MAX_SECONDS, U64_MAX, loads_json, optional_int
from ..away import away_view, parse_away_body
from ..drift import offer_drift, required_names
from ..idle import idle_now
from ..manager import RenterManager
from ..offer_filters import filter_offers, parse_image_filter
from ..requirements import RequirementsError, check_requirements, requirements_from_notebook
from ..store import ACTIVE, RenterSession
from ..workspace.paths import under_root


class WalnutHandler(APIHandler):
    @property
    def walnut(self) -> RenterManager:
        return self.settings["walnut_manager"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every failure of every /walnut/ handler is answered here, as
        {"message", "status"}: a WalnutError with its own, anything else as a bare 500."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, WalnutError):
            status, message = exc.answer_status, exc.message
        elif isinstance(exc, web.HTTPError):
            status, message = exc.status_code, exc.log_message or self._reason
        else:  # the traceback goes to the server log, never to the page
            status, message = 500, "internal error in jupyter-walnut (see the server log)"
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "status": status}))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, WalnutError):
            self.log.warning("%s %s: %s", self.request.method, self.request.path, value)
            return  # expected failures, already answered in words: no traceback
        super().log_exception(typ, value, tb)

    def session_json(self, s: RenterSession) -> dict:
        """A session as the sidebar reads it, with the steps its launch went through."""
        return {**s.public(), "launch": self.walnut.store.launch_steps(s.id),
                # the provider preparing its requirements (issue #15), as last reported
                "environment": s.extra.get("environment"),
                "has_requirements": bool(s.extra.get("requirements")),
                # issue #16: what its end brought home, and warnings before that end
                "results": s.extra.get("results"), "warnings": self.walnut.warnings(s),
                "idle": idle_now(s),  # issue #17: the provider's idle clock, as last seen
                "away": away_view(s),
                # notebooks written from the journal since this server started (issue #17)
                "outputs_written": self.walnut.outputs_written_view(s.id)}

    def body(self) -> dict:
        try:
            data = loads_json(self.request.body or b"{}")
        except (ValueError, RecursionError) as exc:
            raise BadRequest("request body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object")
        return data


def positive_int(data: dict, key: str, maximum: int = U64_MAX) -> int | None:
    """An optional count or amount of the request body (None when absent)."""
    return optional_int(data, key, minimum=1, maximum=maximum)


def _str_field(data: dict, key: str, required: bool = True, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} is required")
    return value


class OffersHandler(WalnutHandler):
    @web.authenticated
    async def get(self) -> None:
        """?image=NAME&package=torch>=2&cuda=any|12|>=12.1 narrow the list (400 on a bad
        filter, before any provider is asked)."""
        # JupyterLab's requests carry a cache-busting `?<timestamp>`: not a filter
        unknown = sorted(a for a in set(self.request.arguments) - {"image", "package", "cuda"}
                         if not a.isdigit())
        if unknown:
            raise BadRequest(f"unknown filter: {unknown[0][:64]}")
        wanted = parse_image_filter(self.get_query_argument("image", None),
                                    self.get_query_arguments("package"),
                                    self.get_query_argument("cuda", None))
        offers = filter_offers(await self.walnut.offers(), wanted)
        self.finish(json.dumps({"offers": offers}))


def launch_folder(root_dir: str, data: dict) -> Path | None:
    """`folder` (a folder under the server root) or `folder_from_notebook` (a notebook's
    path: its folder) to send to the session's workspace (issue #16)."""
    folder, notebook = data.get("folder"), data.get("folder_from_notebook")
    if folder is not None and notebook is not None:
        raise BadRequest("give folder or folder_from_notebook, not both")
    if folder is None and notebook is None:
        return None
    name = "folder" if folder is not None else "folder_from_notebook"
    path = under_root(root_dir, folder if folder is not None else notebook, name)
    path = path if folder is not None else path.parent
    if not path.is_dir():
        raise BadRequest(f"{name}: {path.name!r} is not a folder")
    return path


class SessionsHandler(WalnutHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps({"sessions": [self.session_json(s)
                                             for s in self.walnut.store.list()]}))

    @web.authenticated
    async def post(self) -> None:
        data = self.body()
        unknown = sorted(set(data) - {"provider_url", "shape", "image", "max_seconds",
                                      "budget_mist", "requirements",
                                      "requirements_from_notebook", "folder",
                                      "folder_from_notebook", "idle_stop_minutes",
                                      "away"})
        if unknown:
            raise BadRequest(f"unknown field: {unknown[0]}")
        away = self.away_at_launch(data)  # checked, like the rest, before any step
        requirements = self.requirements(data)  # a bad one is refused before any step
        session = await self.walnut.launch(
            provider_url=_str_field(data, "provider_url"),
            shape=_str_field(data, "shape"),
            image=_str_field(data, "image", default="python"),
            max_seconds=positive_int(data, "max_seconds", MAX_SECONDS),
            budget_mist=positive_int(data, "budget_mist"),
            requirements=requirements,
            folder=self.launch_folder(data),
            idle_stop_minutes=data.get("idle_stop_minutes"),  # checked before any step
        )
        # the image's declared versions against this server's (what the launch installs
        # is at the versions asked for): display only, a provider that cannot say gives none
        drift = await offer_drift(self.walnut.client(session.provider_url), session.image,
                                  exclude=required_names(requirements))
        if away is not None:  # the session runs either way: a refusal is said, not raised
            try:
                session = await self.walnut.set_away(session.id, *away)
            except WalnutError as exc:
                self.log.warning("session %s launched without away mode: %s", session.id, exc)
        self.set_status(201)
        self.finish(json.dumps({**self.session_json(session), "drift": drift}))


    @staticmethod
    def away_at_launch(data: dict) -> tuple[int, int] | None:
        """`away`: {"budget_mist", "seconds"} turns away mode on once the session runs."""
        away = data.get("away")
        return None if away is None else parse_away_body(away, "away: ")

    def requirements(self, data: dict) -> str | None:
        """`requirements` (pip requirements text) or `requirements_from_notebook` (a
        notebook's path under the server root: its imports at this server's versions)."""
        text, notebook = data.get("requirements"), data.get("requirements_from_notebook")
        if text is not None and notebook is not None:
            raise BadRequest("give requirements or requirements_from_notebook, not both")
        if notebook is not None:
            return requirements_from_notebook(self.server_path(notebook))
        if text is None:
            return None
        if not isinstance(text, str):
            raise BadRequest("requirements must be a string of pip requirements")
        return check_requirements(text)

    def launch_folder(self, data: dict) -> Path | None:
        return launch_folder(self.settings.get("server_root_dir", "."), data)

    def server_path(self, rel: object) -> Path:
        """A path the browser names, inside the server's root (as the file browser sees)."""
        if not isinstance(rel, str) or not rel:
            raise RequirementsError("requirements_from_notebook must be a notebook's path "
                                    "relative to the server root")
        root = Path(self.settings.get("server_root_dir", ".")).expanduser().resolve()
        try:
            path = (root / rel).resolve()
        except (OSError, ValueError) as exc:
            raise RequirementsError(f"{rel!r} is not a path: {exc}") from None
        if root not in path.parents:
            raise RequirementsError(f"{rel}: outside the server root")
        return path


class AwayHandler(WalnutHandler):
    """Away mode (issue #17): POST {"budget_mist", "seconds"} on, DELETE off."""

    @web.authenticated
    async def post(self, session_id: str) -> None:
        session = await self.walnut.set_away(session_id, *parse_away_body(self.body()))
        self.finish(json.dumps(self.session_json(session)))

    @web.authenticated
    async def delete(self, session_id: str) -> None:
        session = await self.walnut.set_away(session_id)
        self.finish(json.dumps(self.session_json(session)))


class SessionHandler(WalnutHandler):
    @web.authenticated
    def get(self, session_id: str) -> None:
        self.finish(json.dumps(self.session_json(self.walnut.get(session_id))))

    @web.authenticated
    async def patch(self, session_id: str) -> None:
        """{"idle_stop_minutes": N|"off"} changes a running session's idle threshold;
        {"keep_running": true} (the idle warning's action) starts its idle clock again."""
        data = self.body()
        if set(data) not in ({"idle_stop_minutes"}, {"keep_running"}) or data.get(
                "keep_running", True) is not True or data.get("idle_stop_minutes", 0) is None:
            raise BadRequest('give {"idle_stop_minutes": N} or {"keep_running": true}')
        session = await self.walnut.set_idle_stop(session_id, data.get("idle_stop_minutes"))
        self.finish(json.dumps(self.session_json(session)))

    @web.authenticated
    async def delete(self, session_id: str) -> None:
        session = await self.walnut.stop(session_id)
        self.finish(json.dumps(self.session_json(session)))


class StatusHandler(WalnutHandler):
    """What the status bar shows: active sessions and their running cost."""

    @web.authenticated
    def get(self) -> None:
        active = self.walnut.store.list(statuses=ACTIVE)
        self.finish(json.dumps({
            "active_sessions": len(active),
            "cost_mist": sum(s.cost_mist for s in active),
            "budget_mist": sum(s.budget_mist for s in active),
            "remaining_mist": sum(s.remaining_mist for s in active),
            "address": self.walnut.key.address,
        }))


class WalletHandler(WalnutHandler):
    @web.authenticated
    async def get(self) -> None:
        self.finish(json.dumps({"address": self.walnut.key.address,
                                "public_key": self.walnut.key.public_key.hex(),
                                "network": self.walnut.network,
                                "balance_mist": await self.walnut.payments.balance()}))


class FundHandler(WalnutHandler):
    """The local ledger's faucet, for demos; a real network has no such thing."""

    @web.authenticated
    async def post(self) -> None:
        amount = positive_int(self.body(), "amount_mist")
        if amount is None:
            raise BadRequest("amount_mist is required")
        if self.walnut.network != "local":
            raise BadRequest("funding is only possible on the local ledger")
        balance = self.walnut.ledger.fund(self.walnut.key.address, amount)
        self.finish(json.dumps({"address": self.walnut.key.address, "balance_mist": balance,
                                "network": self.walnut.network}))


class TopUpHandler(WalnutHandler):
    @web.authenticated
    async def post(self, session_id: str) -> None:
        amount = positive_int(self.body(), "amount_mist")
        if amount is None:
            raise BadRequest("amount_mist is required")
        session = await self.walnut.top_up(session_id, amount)
        self.finish(json.dumps(session.public()))
