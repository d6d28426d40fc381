"""TensorBoard in a session, as a researcher runs it (issue #16): the real one, not a stand-in.

The renter uploads TensorBoard's wheels to the session's workspace through its Jupyter
Server (the offline provider's documented way to install: `%pip install --no-index`), a
cell installs them into the session env, writes a training run's scalars and starts
TensorBoard on port 6006. Through the provider's proxy it needs the session's token; through
the renter's server, Jupyter's login and then the session origin's ticket; in Chromium the
dashboard loads and lists the run. Default stack: Docker runtime, TLS with pinning.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
from stack import StackNode
from test_port_proxy import _insecure, browser, on_apps_origin, start_app
from test_session_terminal import access_token, http
from ui_helpers import WalnutStack, http_json

from jupyter_walnut.ledger import LocalLedger

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".cache" / "test-wheels-tensorboard"
PORT = 6006
START = f"""
import subprocess, sys, socket, time
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.compat.proto import event_pb2, summary_pb2
writer = EventFileWriter('runs/first-run')
for step in range(5):
    value = summary_pb2.Summary.Value(tag='loss', simple_value=1.0 / (step + 1))
    writer.add_event(event_pb2.Event(step=step, wall_time=time.time(),
                                     summary=summary_pb2.Summary(value=[value])))
writer.close()
subprocess.Popen([sys.executable, '-m', 'tensorboard.main', '--logdir', 'runs',
                  '--host', '0.0.0.0', '--port', '{PORT}'], start_new_session=True,
                 stdout=open('tensorboard.log', 'w'), stderr=subprocess.STDOUT)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        socket.create_connection(('127.0.0.1', {PORT}), 1).close(); print('listening'); break
    except OSError:
        time.sleep(0.2)  # polling TensorBoard's port, bounded by the deadline
else:
    print(open('tensorboard.log').read())
"""
INSTALL = ("import subprocess, sys\n"
           "r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', "
           "'--find-links', 'wheels', 'tensorboard'], capture_output=True, text=True)\n"
           "print('installed' if r.returncode == 0 else r.stdout[-2000:] + r.stderr[-2000:])")


def tensorboard_wheels() -> Path:
    """TensorBoard and its dependencies as wheels for this Python (the session images'),
    downloaded once; the session itself reaches no registry."""
    if not any(WHEELS.glob("tensorboard-*.whl")):
        WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:",
                        "-d", str(WHEELS), "tensorboard"], check=True, capture_output=True,
                       timeout=600)
    return WHEELS


@pytest.fixture(scope="module")
def board():
    """(stack, node, session): a Docker session running TensorBoard on PORT."""
    root = Path(tempfile.mkdtemp(prefix="walnut-tensorboard-"))
    ledger = LocalLedger(root / "ledger.sqlite")
    node = StackNode(root / "stack-provider", ledger)
    try:
        with WalnutStack(root, provider_url=node.pinned_url) as stack:
            shutil.copytree(tensorboard_wheels(), root / "notebooks" / "wheels")
            stack.api("wallet/fund", "POST", {"amount_mist": 10**10})
            session = stack.api("sessions", "POST", {"provider_url": node.pinned_url,
                                                     "shape": "cpu-small"}, timeout=180)
            sid = session["id"]
            transfer = stack.api(f"sessions/{sid}/push", "POST", {"path": "wheels",
                                                                  "dest": "wheels"})
            deadline = time.monotonic() + 300
            while transfer["state"] == "running":
                assert time.monotonic() < deadline, transfer
                time.sleep(0.5)  # polling the renter's transfer record, bounded
                transfer = stack.api(f"sessions/{sid}/transfers/{transfer['id']}")
            assert transfer["state"] == "done", transfer
            token = access_token(stack, sid)
            start_app(node, sid, token, code=INSTALL, expect="installed", timeout=600)
            start_app(node, sid, token, code=START, expect="listening", timeout=180)
            yield stack, node, session
    finally:
        node.stop()
        ledger.close()
        shutil.rmtree(root, ignore_errors=True)


def test_tensorboard_needs_the_sessions_credentials(board) -> None:
    stack, node, s = board
    provider = f"{node.url}/api/v1/sessions/{s['id']}/proxy/{PORT}/data/runs"
    assert http(provider, context=_insecure())[0] == 401  # no session token
    assert http(provider, headers={"Authorization": "token nope"}, context=_insecure())[0] == 403
    token = access_token(stack, s["id"])
    status, body = http(provider, headers={"Authorization": f"token {token}"},
                        context=_insecure())
    assert status == 200 and b"first-run" in body, body
    # the renter's server: Jupyter's login first, then the session origin's own cookie
    assert http(f"{stack.base_url}walnut/sessions/{s['id']}/proxy/{PORT}/")[0] == 403
    opened = http_json(f"{stack.base_url}walnut/sessions/{s['id']}/proxy/{PORT}", "POST", {},
                       stack.token)
    assert on_apps_origin(opened["url"] + "data/runs")[0] == 403  # no ticket redeemed
    assert on_apps_origin(opened["login"], "POST", body=b"ticket=forged")[0] == 403


def test_tensorboard_dashboard_in_chromium(board) -> None:
    stack, _node, s = board
    with browser() as page:
        page.goto(stack.lab_url)
        page.goto(f"{stack.base_url}walnut/sessions/{s['id']}/proxy/{PORT}/")
        assert page.url.startswith(f"http://{s['id']}.localhost:")
        assert urllib.parse.urlsplit(page.url).path == f"/walnut/sessions/{s['id']}/proxy/{PORT}/"
        page.get_by_text("first-run").first.wait_for(timeout=60_000)  # the run, from data/runs
        assert "TensorBoard" in page.title()
