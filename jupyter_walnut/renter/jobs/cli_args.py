"""Arguments and actions of `job` and `sweep`, shared by `walnut job` and `%walnut job`.

Actions return what to show (a Table, or a dict with --json); `ui.run(factory)` runs a
coroutine made by `factory(on_progress)` and shows its progress the local way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..requirements import read_requirements_file
from .bundle import parse_value
from .manager import JobError, JobManager
from .sweep import expand_grid, parse_grid, run_sweep, summary
from .tables import Table, mist


def _files(values: list[str]) -> list[str]:
    return [f.strip() for v in values for f in v.split(",") if f.strip()]


def _params(values: list[str]) -> dict[str, Any]:
    out = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name.isidentifier():
            raise JobError(f"--param {v!r}: write NAME=VALUE")
        out[name] = parse_value(value)
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", action="append", default=[], metavar="A,B",
                   help="input files or folders sent with the job")
    p.add_argument("--offer", help="row number, SHAPE, SHAPE@URL or URL (default: cheapest)")
    p.add_argument("--budget", type=int, required=True, metavar="MIST",
                   help="the most the job may cost, retries included")
    p.add_argument("--retries", type=int, default=2, help="retries on another offer after a "
                   "provider or kernel failure (default 2)")
    p.add_argument("--image", default="python")
    p.add_argument("--requirements", metavar="FILE",
                   help="pip requirements the provider installs before each run")


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="job_action", metavar="ACTION", required=True)
    sub = actions.add_parser("submit", help="send a notebook or script to run unattended")
    sub.add_argument("path", help="the notebook (.ipynb) or script (.py)")
    _common(sub)
    sub.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="notebook parameter (papermill-style parameters cell)")
    sub.add_argument("--redundancy", type=int, default=1, choices=(1, 2),
                     help="2: run on two providers and compare result digests")
    sub.add_argument("--cell-timeout", type=int, metavar="S")
    sub.add_argument("--name")
    sub.add_argument("--wait", action="store_true", help="follow it until it ends")
    ls = actions.add_parser("list", help="your jobs")
    ls.add_argument("--sweep", help="only the runs of this sweep")
    for name, text in (("status", "follow once and show a job"),
                       ("watch", "follow a job live until it ends"),
                       ("results", "where a job's results are, and their files"),
                       ("cancel", "stop a job and its sessions")):
        a = actions.add_parser(name, help=text)
        a.add_argument("job_id")
        a.add_argument("--json", action="store_true", help="the full record as JSON")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the notebook, with a cell tagged `parameters`")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="values of one parameter; several --grid make a product")
    parser.add_argument("--points", type=Path, metavar="JSON",
                        help="a JSON list of parameter objects instead of --grid")
    _common(parser)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--metric", help="the recorded metric that ranks runs")
    parser.add_argument("--maximize", action="store_true", help="higher --metric is better")


def job_table(job: dict) -> Table:
    rows = [["job", job["id"]], ["name", job["name"]], ["status", job["status"]],
            ["cost", f"{mist(job['cost_mist'])} of {mist(job['budget_mist'])} MIST"]]
    for a in job["attempts"]:
        cells = f", cell {a['cell']} of {a['cells']}" if a["cells"] else ""
        rows.append([f"attempt {a['n']}" + (f" (slot {a['slot']})" if job["redundancy"] > 1
                                            else ""),
                     f"{a['status']} on {a['node'] or '-'}{cells}, {a['elapsed_s']:.1f} s, "
                     f"{mist(a['cost_mist'])} MIST" + (f": {a['error']}" if a["error"] else "")])
    if job["error"]:
        rows.append(["error", job["error"]])
    if job["verified"] is not None:
        rows.append(["verified", ("yes: " if job["verified"] else "NO: ") + job["verification"]])
    if job["metrics"]:
        rows.append(["metrics", json.dumps(job["metrics"])])
    if job["result_dir"]:
        rows.append(["results", job["result_dir"]])
    return Table(["", ""], rows, title=f"Walnut job {job['id']}")


def jobs_table(jobs: list[dict]) -> Table:
    return Table(["job", "name", "status", "attempts", "cost MIST", "budget MIST", "verified"],
                 [[j["id"], j["name"], j["status"], len(j["attempts"]), mist(j["cost_mist"]),
                   mist(j["budget_mist"]), {None: "", True: "yes", False: "NO"}[j["verified"]]]
                  for j in jobs], title=f"{len(jobs)} job(s)")


def run_job_command(args: argparse.Namespace, jm: JobManager, ui: Any,
                    listed: list[dict] | None = None) -> Any:
    action = args.job_action
    if action == "list":
        return jobs_table(jm.store.list(sweep_id=args.sweep))
    if action == "submit":
        requirements = _requirements(args)
        job = jm.create(args.path, files=_files(args.files), budget_mist=args.budget,
                        parameters=_params(args.param), offer=_offer(args.offer, listed),
                        max_retries=args.retries, redundancy=args.redundancy,
                        name=args.name, image=args.image, cell_timeout_s=args.cell_timeout,
                        requirements=requirements)

        async def go(progress):
            started = await jm.start(job["id"])
            progress(f"job {job['id']} started on "
                     f"{', '.join(a['node'] for a in started['attempts'])}")
            if args.wait:
                return await jm.watch(job["id"], progress)
            return started

        return job_table(ui.run(go))
    jm.get(args.job_id)  # a clear error for an unknown id
    if action == "status":
        job = ui.run(lambda progress: jm.step(args.job_id))
    elif action == "watch":
        job = ui.run(lambda progress: jm.watch(args.job_id, progress))
    elif action == "cancel":
        job = ui.run(lambda progress: jm.cancel(args.job_id))
    else:  # results
        job = ui.run(lambda progress: jm.step(args.job_id))
        if getattr(args, "json", False):
            return job
        if not job["result_dir"]:
            raise JobError(f"job {job['id']} has no results yet ({job['status']})")
        root = Path(job["result_dir"])
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return Table(["file", "bytes"], [[p.relative_to(root).as_posix(), p.stat().st_size]
                                         for p in files], title=f"{root}")
    return job if getattr(args, "json", False) else job_table(job)


def _requirements(args: argparse.Namespace) -> str | None:
    """--requirements FILE's text: a bad file is one line, before anything is recorded or
    paid."""
    return read_requirements_file(args.requirements) if args.requirements else None


def run_sweep_command(args: argparse.Namespace, jm: JobManager, ui: Any,
                      listed: list[dict] | None = None) -> Table:
    requirements = _requirements(args)
    if args.points:
        points = json.loads(args.points.read_text())
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise JobError("--points must hold a JSON list of objects")
    elif args.grid:
        points = expand_grid(parse_grid(args.grid))
    else:
        raise JobError("give the parameter sets with --grid NAME=V1,V2 or --points FILE")
    sweep = ui.run(lambda progress: run_sweep(
        jm, args.path, points, budget_mist=args.budget, concurrency=args.concurrency,
        files=_files(args.files), offer=_offer(args.offer, listed), max_retries=args.retries,
        image=args.image, requirements=requirements, on_progress=progress))
    table, _ = summary(jm.store.list(sweep_id=sweep["id"]), args.metric, args.maximize)
    table.title = f"sweep {sweep['id']}: {table.title}"
    return table


def _offer(spec: str | None, listed: list[dict] | None) -> str | None:
    """A row number of the magics' last listing becomes SHAPE@URL (jobs outlive it)."""
    if spec and spec.isdigit() and listed:
        index = int(spec)
        if not 0 <= index < len(listed):
            raise JobError(f"no offer #{index}; list them with `providers`")
        return f"{listed[index]['shape']}@{listed[index]['provider_url']}"
    return spec
