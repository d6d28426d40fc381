"""Close the laptop, in the browser (issue #17): a JupyterLab tab stays open on a notebook
whose cell trains in an away session; the renter's Jupyter Server exits (stopping its other
sessions, as by default) and stays down longer than the provider's payment grace, then
starts again at the same address. The tab reconnects to the same remote kernel, and the
outputs the cell made while nobody was connected fill the notebook: in the open tab, with
their execution count, and in the file. The renter pays what was metered.

Default stack (Docker runtime, TLS with pinning); skipped like test_ui_e2e without Chromium,
Playwright or the built labextension unless WALNUT_REQUIRE_UI=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from conftest import provider_config
from stack import StackNode, stack_runtime
from test_ui_e2e import ARTIFACTS, _reason, kept_on_failure, wait_for, wait_kernels_idle
from test_ui_e2e import page as browser_page  # noqa: F401 (a fixture, by this name)
from ui_helpers import WalnutStack, http_json

from jupyter_walnut.ledger import LocalLedger

if _reason and os.environ.get("WALNUT_REQUIRE_UI") != "1":
    pytestmark = pytest.mark.skip(reason=_reason)

PRICE = 1000  # cpu-small, MIST per second (tests/conftest.py provider_config)
GRACE_S = 2  # the provider's payment grace: being away longer than this is the point
CELL = ("import time\n"
        "for i in range(8):\n"
        "    print('epoch', i, flush=True)\n"
        "    time.sleep(1)\n"
        "print('trained while away')")


@pytest.fixture
def stack():
    if _reason:  # only reached with WALNUT_REQUIRE_UI=1
        pytest.fail(f"WALNUT_REQUIRE_UI=1 but {_reason}")
    root = Path(tempfile.mkdtemp(prefix="walnut-ui-away-"))
    ledger = LocalLedger(root / "ledger.sqlite")  # the file the renter's JupyterLab uses
    node = StackNode(root / "stack-provider", ledger, config=provider_config(
        provider={"name": "stack-node", "runtime": stack_runtime()},
        settlement={"grace_s": GRACE_S}))
    try:
        with WalnutStack(root, provider_url=node.pinned_url,
                         lab_args=("--WalnutApp.stop_sessions_on_exit=True",)) as s:
            s.node = node  # type: ignore[attr-defined]
            yield s
    finally:
        node.stop()
        ledger.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(900)
def test_a_tab_left_open_shows_what_the_kernel_did_while_the_server_was_away(
        stack, browser_page):  # noqa: F811 (the fixture imported above)
    with kept_on_failure(stack, browser_page, "away"):
        away_flow(stack, browser_page)


def away_flow(stack: WalnutStack, page) -> None:
    node = stack.node  # type: ignore[attr-defined]
    stack.api("wallet/fund", "POST", {"amount_mist": 10**10})
    session = stack.api("sessions", "POST", {"provider_url": node.pinned_url,
                                             "shape": "cpu-small", "budget_mist": 2000 * PRICE},
                        timeout=180)
    sid = session["id"]
    stack.api(f"sessions/{sid}/away", "POST", {"budget_mist": 600 * PRICE, "seconds": 3600})
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": session["kernel_name"], "language": "python", "display_name": "walnut"}})
    nb.cells = [nbformat.v4.new_code_cell(CELL, id="train")]
    path = stack.root / "notebooks" / "train.ipynb"
    nbformat.write(nb, path)

    page.goto(f"{stack.base_url}lab/tree/train.ipynb?token={stack.token}")
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=60_000)
    panel = page.locator(".jp-NotebookPanel").last
    wait_kernels_idle(stack, "the notebook's Walnut kernel to be idle")
    kernels = f"{stack.base_url}api/kernels"
    (kernel_id,) = [k["id"] for k in http_json(kernels, token=stack.token)]
    cell = panel.locator(".jp-Cell").first
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output")
    output.first.filter(has_text="epoch 0").wait_for(timeout=120_000)

    # the server goes; the tab stays open, as on a laptop whose lid closes
    stack.stop_lab()
    rec = node.store.get(sid)
    paid_at_leave = rec.voucher_mist
    # longer than the grace: without away mode the provider stops the session here
    wait_for(lambda: node.store.get(sid).cost_mist - node.store.get(sid).voucher_mist
             > 3 * GRACE_S * PRICE, 120, "the session metered on while away")
    assert node.store.get(sid).status == "running", node.store.get(sid).reason
    stack.restart_lab()

    # the open tab: the outputs made meanwhile, the count, and a word on where they came from
    outputs = cell.locator(".jp-Cell-outputArea")
    outputs.filter(has_text="trained while away").wait_for(timeout=180_000)
    text = outputs.inner_text()
    assert all(f"epoch {i}" in text for i in range(8)), text
    assert "[1]" in cell.locator(".jp-InputPrompt").inner_text()
    page.get_by_text(re.compile("made while you were away are now in train.ipynb")).first \
        .wait_for()
    page.screenshot(path=str(ARTIFACTS / "away-back-in-the-tab.png"))
    # ...and the file, as a notebook anyone opens later has it
    written = nbformat.read(path, as_version=4).cells[0]
    assert "trained while away" in json.dumps(written.outputs) and written.execution_count == 1

    # the tab is back on the same remote kernel: its state is there
    assert [k["id"] for k in http_json(kernels, token=stack.token)] == [kernel_id]
    lost = page.locator(".jp-Dialog", has_text="Server Connection Error")
    if lost.count():  # JupyterLab's own word while its server was gone
        lost.get_by_role("button", name="Close").click()
    cell.locator(".cm-content").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below, in command mode
    page.keyboard.press("Enter")
    page.keyboard.type("print('still', i)")
    page.keyboard.press("Shift+Enter")
    panel.get_by_text("still 7").wait_for(timeout=60_000)

    # the vouchers caught up; the end pays what was metered, not the away ladder
    wait_for(lambda: node.store.get(sid).voucher_mist > paid_at_leave + 3 * GRACE_S * PRICE,
             120, "the vouchers to catch up")
    stack.api(f"sessions/{sid}", "DELETE", timeout=180)
    wait_for(lambda: node.store.get(sid).settlement.final, 120, "the settlement")
    rec = node.store.get(sid)
    assert rec.claimed_mist == rec.cost_mist
    assert not page.walnut_errors, page.walnut_errors  # type: ignore[attr-defined]
