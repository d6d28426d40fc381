"""Away mode (issue #17): close the laptop, the session keeps working, within a bound.

The renter turns away mode on with an away budget; its Jupyter Server then exits (stopping
sessions on exit, the default) or dies, and stays down longer than the provider's payment
grace. The session runs on, paid by the away vouchers the renter signed before leaving; the
provider never holds a voucher above what was paid then plus the away budget. A renter that
comes back pays what was metered; one that never does is stopped at the away budget, and its
results are kept for it. On the default stack (Docker + TLS + pinning);
`WALNUT_TEST_RUNTIME=process` / `WALNUT_TEST_TLS=off` run the cheap leg.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import nbformat
import pytest
from conftest import open_channel, provider_config
from stack import StackNode, stack_runtime
from test_output_journal import execute, until
from test_renter_restart import Server

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.money import format_sui
from jupyter_walnut.ledger.vouchers import Voucher
from jupyter_walnut.provider.away import held_rungs
from jupyter_walnut.renter.provider_client import ProviderAPIError

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(420)]

PRICE = 1000  # cpu-small, MIST per second
GRACE_S = 2  # the provider's payment grace: being away longer than this is the point
AWAY_CELL = ("import time\n"
             "for i in range(6):\n"
             "    print('epoch', i, flush=True)\n"
             "    time.sleep(1)\n"
             "open('model.ckpt', 'w').write('weights')\n"
             "print('trained while away')")


@pytest.fixture
def node(tmp_path, ledger):
    stack = StackNode(tmp_path / "provider", ledger, config=provider_config(
        provider={"name": "stack-node", "runtime": stack_runtime()},
        settlement={"grace_s": GRACE_S}))
    yield stack
    stack.stop()


def renter_server(tmp_path, node, ledger) -> Server:
    """The renter's server as users run it: it stops its sessions when it exits."""
    key = KeyPair.generate()
    key.save(tmp_path / "renter" / "wallet.key")
    ledger.fund(key.address, 10**12)
    server = Server(tmp_path, node.pinned_url, ledger)
    config = server.env["JUPYTER_CONFIG_DIR"] + "/jupyter_server_config.json"
    data = json.loads(Path(config).read_text())
    data["WalnutApp"]["stop_sessions_on_exit"] = True
    Path(config).write_text(json.dumps(data))
    return server


def notebook(path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(AWAY_CELL, id="train")]
    nbformat.write(nb, path)


async def wait_for(predicate, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)  # polling the provider's store, bounded by the deadline


async def start_training(server, node, budget_mist: int, away_mist: int) -> tuple[dict, str]:
    """A session in away mode with the training cell running in its notebook."""
    session = server.call("POST", "/walnut/sessions", {
        "provider_url": node.pinned_url, "shape": "cpu-small", "budget_mist": budget_mist})
    away = server.call("POST", f"/walnut/sessions/{session['id']}/away",
                       {"budget_mist": away_mist, "seconds": 3600})["away"]
    assert f"at most {format_sui(away_mist)} beyond what you have already paid" in \
        away["trust_bound"]
    nb_session = server.call("POST", "/api/sessions", {
        "path": "train.ipynb", "type": "notebook", "name": "train.ipynb",
        "kernel": {"name": session["kernel_name"]}})
    ws = await server.ws(nb_session["kernel"]["id"])
    msg_id = await execute(ws, AWAY_CELL, "train")
    await until(ws, msg_id, lambda m: m["header"]["msg_type"] == "stream"
                and "epoch 0" in m["content"]["text"])
    ws.conn.close()
    return session, nb_session["kernel"]["id"]


def within_bound(rec, away_mist: int) -> bool:
    """The provider holds no voucher above what was paid plus the away budget."""
    rungs = held_rungs(rec)
    return rec.away_top_mist <= rec.voucher_mist + away_mist and \
        all(amount <= rec.away_top_mist for amount, _ in rungs)


async def test_an_away_session_runs_on_while_the_renter_is_gone_and_pays_what_was_metered(
        tmp_path, node, ledger):
    away_mist = 600 * PRICE
    server = renter_server(tmp_path, node, ledger)
    notebook(server.root / "train.ipynb")
    server.start()
    try:
        session, kernel_id = await start_training(server, node, 900 * PRICE, away_mist)
        sid = session["id"]
        rec = node.store.get(sid)
        paid_at_leave = rec.voucher_mist
        assert rec.away_top_mist > paid_at_leave and within_bound(rec, away_mist)

        server.stop(signal.SIGTERM)  # a clean exit that stops every session but away ones
        # longer than the grace: without away mode the provider stops the session here
        await wait_for(lambda: node.store.get(sid).cost_mist - node.store.get(sid).voucher_mist
                       > 3 * GRACE_S * PRICE, "the session was not metered on while away")
        rec = node.store.get(sid)
        assert rec.status == "running", rec.reason
        assert rec.away_top_mist <= paid_at_leave + away_mist and within_bound(rec, away_mist)

        server.start()
        await wait_for(lambda: kernel_id in [k["id"] for k in server.call("GET", "/api/kernels")],
                       "the kernel was not re-attached")

        def cells() -> list:
            return nbformat.read(server.root / "train.ipynb", as_version=4).cells

        await wait_for(lambda: "trained while away" in json.dumps(cells()[0].get("outputs", [])),
                       "the outputs made while away are not in the notebook")
        # an open JupyterLab tab learns where they went, to reload it (labextension)
        assert [w["path"] for w in server.call("GET", f"/walnut/sessions/{sid}")[
            "outputs_written"]] == ["train.ipynb"]
        # every output made after the server left, in order (earlier ones: if saved before)
        written = cells()[0]
        text = "".join(o.get("text", "") for o in written.outputs)
        assert text in {"".join(f"epoch {i}\n" for i in range(k, 6)) + "trained while away\n"
                        for k in range(6)}, written.outputs
        # the vouchers catch up with the metered cost
        await wait_for(lambda: node.store.get(sid).voucher_mist > paid_at_leave + 3 * GRACE_S
                       * PRICE, "the vouchers did not catch up")

        server.call("DELETE", f"/walnut/sessions/{sid}")
        await wait_for(lambda: node.store.get(sid).settlement.final, "never settled")
        rec = node.store.get(sid)
        assert rec.claimed_mist == rec.cost_mist  # what was metered, not the away ladder
        assert ledger.get_channel(rec.channel_id).refunded == rec.deposit_mist - rec.cost_mist
    finally:
        server.stop()


async def test_a_renter_that_never_returns_is_stopped_at_its_away_budget(tmp_path, node,
                                                                         ledger):
    away_mist = 8 * PRICE  # the cell writes its checkpoint before this runs out
    server = renter_server(tmp_path, node, ledger)
    notebook(server.root / "train.ipynb")
    server.start()
    try:
        session, _ = await start_training(server, node, 900 * PRICE, away_mist)
        sid = session["id"]
        paid_at_leave = node.store.get(sid).voucher_mist
        server.stop(signal.SIGKILL)  # the laptop's battery: nothing more is signed

        await wait_for(lambda: node.store.get(sid).status != "running",
                       "the session outlived its away budget")
        rec = node.store.get(sid)
        assert rec.reason == "the away budget is used up"
        await wait_for(lambda: node.store.get(sid).settlement.final, "never settled")
        rec = node.store.get(sid)
        assert rec.voucher_mist == paid_at_leave  # nothing signed after it left
        assert paid_at_leave < rec.claimed_mist <= paid_at_leave + away_mist
        assert rec.claimed_mist <= rec.cost_mist + 30 * PRICE  # one rung over, at most

        server.start()  # much later: the results the provider kept come home
        results = server.root / "walnut-results" / sid / "model.ckpt"
        await wait_for(results.exists, "the session's results were not kept for the renter")
        assert results.read_text() == "weights"
    finally:
        server.stop()


async def test_away_vouchers_the_provider_refuses_keep_nothing(tmp_path, node, ledger):
    """The renter's attacks on the ladder: each is a 400 (or 404) and nothing is held."""
    renter, stranger = KeyPair.generate(), KeyPair.generate()
    channel_id = open_channel(ledger, renter, node, deposit=200 * PRICE)
    client = node.client(renter)
    sid = node.run(client.create_session(image="python", channel_id=channel_id))["id"]
    node.run(client.wait_running(sid))

    def sign(key, amount):
        return amount, Voucher.sign(key, channel_id, amount).signature

    attacks = {
        "a rung signed by another key": [sign(stranger, 10 * PRICE)],
        "a rung above the deposit": [sign(renter, 10 * PRICE), sign(renter, 201 * PRICE)],
        "rungs out of order": [sign(renter, 20 * PRICE), sign(renter, 10 * PRICE)],
    }
    for what, rungs in attacks.items():
        with pytest.raises(ProviderAPIError) as err:
            node.run(client.set_away(sid, 3600, rungs))
        assert err.value.status == 400, what
        assert node.store.get(sid).away_top_mist == 0 and not node.store.get(sid).away_vouchers
    with pytest.raises(ProviderAPIError) as err:  # another renter's session looks missing
        node.run(node.client(stranger).set_away(sid, 3600, [sign(stranger, PRICE)]))
    assert err.value.status == 404
    node.run(client.set_away(sid, 3600, [sign(renter, 10 * PRICE)]))
    assert node.store.get(sid).away_top_mist == 10 * PRICE
    assert "away_vouchers" not in node.run(client.get_session(sid))  # never shown back
    node.run(client.stop_session(sid))

