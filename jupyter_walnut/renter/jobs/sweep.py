"""Parameter sweeps: one notebook, many parameter sets, fanned out over providers with a
total budget and a concurrency limit; a table of parameters against recorded metrics."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bundle import parse_value
from .manager import TERMINAL, JobError, JobManager, progress_line
from .tables import Table, mist


def parse_grid(specs: list[str]) -> dict[str, list]:
    """["lr=0.1,0.01", "layers=1,2"] -> {"lr": [0.1, 0.01], "layers": [1, 2]}."""
    grid: dict[str, list] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name.strip().isidentifier() or not values.strip():
            raise JobError(f"grid entry {spec!r}: write NAME=V1,V2,...")
        grid[name.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    return grid


def expand_grid(grid: dict[str, list]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in
            itertools.product(*(grid[n] for n in names))]


async def run_sweep(jm: JobManager, path: str | Path, points: list[dict[str, Any]], *,
                    budget_mist: int, concurrency: int = 2, files: list = (),
                    offer: str | None = None, max_retries: int = 1, image: str = "python",
                    requirements: str | None = None,
                    on_progress: Callable[[str], None] | None = None) -> dict:
    """Run every point; the total budget is split evenly, so the sweep never spends more.
    Every run installs the same `requirements` first (the provider's environment cache
    makes the second run on a node start without pip)."""
    if not points:
        raise JobError("a sweep needs at least one parameter set")
    if concurrency < 1:
        raise JobError("concurrency must be at least 1")
    per_job = budget_mist // len(points)
    if per_job <= 0:
        raise JobError(f"a budget of {budget_mist} MIST cannot cover {len(points)} runs")
    sweep_id = "sweep-" + secrets.token_hex(4)
    jobs = [jm.create(path, files=files, budget_mist=per_job, parameters=p, offer=offer,
                      max_retries=max_retries, sweep_id=sweep_id, image=image,
                      requirements=requirements, name=f"{Path(path).name} {p}") for p in points]
    gate = asyncio.Semaphore(concurrency)
    busy: dict[str, str] = {}  # job id -> provider url, to spread runs over providers
    done = 0

    async def one(job: dict) -> None:
        nonlocal done
        async with gate:
            started = await jm.start(job["id"], avoid=set(busy.values()))
            if started["attempts"]:
                busy[job["id"]] = started["attempts"][-1]["provider_url"]
            try:
                await jm.watch(job["id"], on_progress=lambda line: None)
            finally:
                busy.pop(job["id"], None)
            done += 1
            if on_progress is not None:
                on_progress(f"{done}/{len(jobs)} runs done; last: "
                            f"{progress_line(jm.get(job['id']))}")

    await asyncio.gather(*(one(j) for j in jobs))
    return {"id": sweep_id, "jobs": [j["id"] for j in jobs]}


def summary(jobs: list[dict], metric: str | None = None, maximize: bool = False
            ) -> tuple[Table, dict | None]:
    """Parameters vs metrics, one row per run; the best run by `metric` marked."""
    jobs = sorted(jobs, key=lambda j: j["created_at"])
    params = sorted({k for j in jobs for k in j["parameters"]})
    metrics = sorted({k for j in jobs for k in (j.get("metrics") or {})})
    scored = [j for j in jobs if j["status"] == "succeeded" and metric and
              isinstance((j.get("metrics") or {}).get(metric), int | float)]
    best = (max if maximize else min)(scored, key=lambda j: j["metrics"][metric]) \
        if scored else None
    rows = [[*(j["parameters"].get(p, "") for p in params),
             *(_fmt((j.get("metrics") or {}).get(m)) for m in metrics),
             j["status"], mist(j["cost_mist"]),
             j["attempts"][-1]["node"] if j["attempts"] else "", j["id"]] for j in jobs]
    highlight = jobs.index(best) if best is not None else None
    title = f"{len(jobs)} run(s)" + (f"; best {metric}: {best['metrics'][metric]}"
                                     if best else "")
    table = Table([*params, *metrics, "status", "cost MIST", "provider", "job"], rows,
                  title=title, highlight=highlight)
    return table, best


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


def all_done(jobs: list[dict]) -> bool:
    return all(j["status"] in TERMINAL for j in jobs)
