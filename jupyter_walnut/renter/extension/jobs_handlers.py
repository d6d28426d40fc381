"""REST for the sidebar's Jobs section, under /walnut/jobs (errors as in handlers.py).

    GET    /walnut/jobs[?sweep=ID]   {"jobs": [job, ...]} newest first
    POST   /walnut/jobs              submit and start; follows it in the server until it ends
        {"path": "dir/nb.ipynb" (relative to the server root), "budget_mist": int,
         "files": ["data.csv", ...], "parameters": {...}, "offer": "SHAPE@URL",
         "max_retries": 2, "redundancy": 1|2, "name": "..."}   -> 201 job
    GET    /walnut/jobs/<id>         the job, followed once first (progress, cost, results)
    DELETE /walnut/jobs/<id>         cancel it

A job: {id, name, status (queued|running|succeeded|failed|cancelled), cost_mist,
budget_mist, attempts: [{n, node, status, cell, cells, elapsed_s, cost_mist, error}],
verified (null|true|false), verification, metrics, result_dir, error}.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from pathlib import Path

from tornado import web

from ...common.errors import BadRequest, WalnutError
from ...common.numbers import optional_int, parse_int
from ..jobs.manager import JobManager
from .handlers import WalnutHandler

_managers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_watchers: set[asyncio.Task] = set()


class JobsBase(WalnutHandler):
    @property
    def jobs(self) -> JobManager:
        jm = _managers.get(self.walnut)
        if jm is None:
            jm = _managers[self.walnut] = JobManager(self.walnut)
        return jm

    def local_path(self, rel: object) -> Path:
        if not isinstance(rel, str) or not rel:
            raise BadRequest("path is required (relative to the server root)")
        root = Path(self.settings.get("server_root_dir", ".")).expanduser().resolve()
        path = (root / rel).resolve()
        if root not in path.parents and path != root:
            raise BadRequest(f"{rel}: outside the server root")
        return path


class JobsHandler(JobsBase):
    @web.authenticated
    def get(self) -> None:
        jobs = self.jobs.store.list(sweep_id=self.get_query_argument("sweep", None))
        self.finish(json.dumps({"jobs": jobs}))

    @web.authenticated
    async def post(self) -> None:
        data = self.body()
        unknown = sorted(set(data) - {"path", "budget_mist", "files", "parameters", "offer",
                                      "max_retries", "redundancy", "name"})
        if unknown:
            raise BadRequest(f"unknown field: {unknown[0]}")
        files = data.get("files") or []
        if not isinstance(files, list):
            raise BadRequest("files must be a list of paths")
        try:
            job = self.jobs.create(
                self.local_path(data.get("path")),
                budget_mist=parse_int(data.get("budget_mist"), "budget_mist", minimum=1),
                files=[self.local_path(f) for f in files],
                parameters=data.get("parameters") or None, offer=data.get("offer"),
                max_retries=optional_int(data, "max_retries", 2, maximum=100),
                redundancy=optional_int(data, "redundancy", 1, minimum=1, maximum=2),
                name=data.get("name"))
        except WalnutError:
            raise  # JobError, NumberError...: answered with their own status
        except (ValueError, TypeError) as exc:  # from reading the files or parameters
            raise BadRequest(str(exc)) from exc
        job = await self.jobs.start(job["id"])
        task = asyncio.ensure_future(self.jobs.watch(job["id"]))  # follows it to the end
        _watchers.add(task)
        task.add_done_callback(_watchers.discard)
        self.set_status(201)
        self.finish(json.dumps(job))


class JobHandler(JobsBase):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        self.finish(json.dumps(await self.jobs.step(job_id)))

    @web.authenticated
    async def delete(self, job_id: str) -> None:
        self.finish(json.dumps(await self.jobs.cancel(job_id)))


def jobs_handlers() -> list[tuple[str, type]]:
    return [(r"/walnut/jobs", JobsHandler), (r"/walnut/jobs/(job-[0-9a-f]{12})", JobHandler)]
