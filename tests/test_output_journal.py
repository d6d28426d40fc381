"""Outputs a remote kernel produced while nobody was connected reach the notebook (issue #17).

The renter's Jupyter Server dies (SIGKILL: a laptop's lid, a crash) while a cell runs on the
session; the cell goes on there and the session's gateway journals its outputs. When the server
comes back it re-attaches the kernel and writes what the journal holds into the notebook file:
the cell that ran away gets its outputs and execution count; a cell whose outputs reached the
frontend while it was connected is left as the user saved it. On the default stack (Docker +
TLS + pinning); `WALNUT_TEST_RUNTIME=process` / `WALNUT_TEST_TLS=off` run the cheap leg.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import nbformat
import pytest
from kernel_ws import message
from test_renter_restart import Server, node  # noqa: F401 (node: the provider fixture)

from jupyter_walnut.common.keys import KeyPair

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]

AWAY = ("import time\n"
        "for i in range(4):\n"
        "    print('step', i, flush=True)\n"
        "    time.sleep(1)\n"
        "print('done while away')")


def notebook(path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('while connected')", id="shown-cell"),
                nbformat.v4.new_code_cell(AWAY, id="away-cell")]
    nbformat.write(nb, path)


async def execute(ws, code: str, cell_id: str) -> str:
    """Send an execute request as JupyterLab does (the cell's id in its metadata)."""
    msg = message("execute_request", {"code": code, "silent": False, "store_history": True,
                                      "user_expressions": {}, "allow_stdin": False,
                                      "stop_on_error": True}, ws.session)
    msg["metadata"] = {"cellId": cell_id}
    await ws.send(msg)
    return msg["header"]["msg_id"]


async def until(ws, msg_id: str, predicate) -> None:
    while True:
        m = await ws.recv(60)
        if m.get("parent_header", {}).get("msg_id") == msg_id and predicate(m):
            return


async def test_outputs_made_while_away_are_written_into_the_notebook(tmp_path, node, ledger):  # noqa: F811
    key = KeyPair.generate()
    key.save(tmp_path / "renter" / "wallet.key")
    ledger.fund(key.address, 10**12)
    server = Server(tmp_path, node.pinned_url, ledger)
    notebook(server.root / "analysis.ipynb")
    server.start()
    try:
        session = server.call("POST", "/walnut/sessions", {
            "provider_url": node.pinned_url, "shape": "cpu-small", "budget_mist": 600_000})
        # JupyterLab's way: a notebook session, so the server knows the kernel's notebook
        nb_session = server.call("POST", "/api/sessions", {
            "path": "analysis.ipynb", "type": "notebook", "name": "analysis.ipynb",
            "kernel": {"name": session["kernel_name"]}})
        kernel_id = nb_session["kernel"]["id"]
        ws = await server.ws(kernel_id)
        shown = await execute(ws, "print('while connected')", "shown-cell")
        await until(ws, shown, lambda m: m["header"]["msg_type"] == "execute_reply")
        away = await execute(ws, AWAY, "away-cell")
        await until(ws, away, lambda m: m["header"]["msg_type"] == "stream"
                    and "step 1" in m["content"]["text"])
        server.stop(signal.SIGKILL)  # the cell goes on in the session, nobody connected

        server.start()
        deadline = time.monotonic() + 180
        while kernel_id not in [k["id"] for k in server.call("GET", "/api/kernels")]:
            assert time.monotonic() < deadline, "kernel was not re-attached"
            await asyncio.sleep(0.1)  # the server re-attaches in the background

        def cells() -> list:
            return nbformat.read(server.root / "analysis.ipynb", as_version=4).cells

        while "done while away" not in json.dumps(cells()[1].get("outputs", [])):
            assert time.monotonic() < deadline, f"no outputs written: {cells()[1]}"
            await asyncio.sleep(0.2)  # the sync follows the journal in the background
        written = cells()
        text = "".join(o.get("text", "") for o in written[1].outputs)
        assert text == "step 0\nstep 1\nstep 2\nstep 3\ndone while away\n"
        assert isinstance(written[1].execution_count, int) and written[1].execution_count >= 2
        # what its frontend showed while connected is the frontend's: not rewritten
        assert written[0].outputs == [] and written[0].execution_count is None
        nbformat.validate(nbformat.read(server.root / "analysis.ipynb", as_version=4))
    finally:
        server.stop()
