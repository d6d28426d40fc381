"""Issue #21: "New Walnut kernel…" where people start kernels. The server extension lists the
`walnut-new` kernelspec; starting it, from any client, refuses at once with what to do,
and nothing is launched, left running or paid."""

from __future__ import annotations

import json

import pytest
from jupyter_client.manager import AsyncKernelManager
from tornado.httpclient import HTTPClientError

from jupyter_walnut.renter.kernel.picker import CHOOSE_AN_OFFER, ChooseAnOffer
from jupyter_walnut.renter.kernelspecs import (
    PICKER_DISPLAY_NAME,
    PICKER_KERNEL,
    kernels_dir,
    write_picker_kernelspec,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def picker() -> bool:
    return True  # WalnutApp.picker_kernelspec; a test parametrizes it to turn it off


@pytest.fixture
def jp_server_config(tmp_path, picker, jp_environ):
    from jupyter_walnut.common.keys import KeyPair

    if not picker:  # left by an earlier server that listed it
        write_picker_kernelspec()
    home = tmp_path / "renter"
    KeyPair.generate().save(home / "wallet.key")
    return {"ServerApp": {"jpserver_extensions": {"jupyter_walnut": True}},
            "WalnutApp": {"providers": [], "walnut_home": str(home),
                          "ledger_path": str(tmp_path / "ledger.sqlite"),
                          "picker_kernelspec": picker}}


async def specs(jp_fetch) -> dict:
    return json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]


async def test_the_picker_entry_is_a_kernelspec_of_the_server(jp_fetch):
    spec = (await specs(jp_fetch))[PICKER_KERNEL]["spec"]
    assert spec["display_name"] == PICKER_DISPLAY_NAME == "New Walnut kernel…"
    assert spec["language"] == "python"
    # what the labextension recognises, and the provisioner that refuses for everyone else
    assert spec["metadata"]["walnut"] == {"picker": True}
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "walnut-picker"


async def test_starting_it_through_the_kernels_api_refuses_at_once(jp_fetch):
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": PICKER_KERNEL}))
    assert err.value.code == 400
    assert json.loads(err.value.response.body)["message"] == CHOOSE_AN_OFFER
    assert "choose an offer in the Walnut offers view" in CHOOSE_AN_OFFER
    assert json.loads((await jp_fetch("api", "kernels")).body) == []  # nothing started


async def test_a_notebook_session_on_it_refuses_with_the_message(jp_fetch):
    # what Notebook 7 (or JupyterLab without the labextension) does for a notebook
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("api", "sessions", method="POST", body=json.dumps(
            {"path": "analysis.ipynb", "type": "notebook", "name": "analysis.ipynb",
             "kernel": {"name": PICKER_KERNEL}}))
    assert json.loads(err.value.response.body)["message"] == CHOOSE_AN_OFFER
    assert json.loads((await jp_fetch("api", "sessions")).body) == []
    assert json.loads((await jp_fetch("api", "kernels")).body) == []


async def test_a_plain_jupyter_client_gets_the_same_refusal(jp_fetch):
    assert PICKER_KERNEL in await specs(jp_fetch)  # the server wrote it where clients look
    km = AsyncKernelManager(kernel_name=PICKER_KERNEL)  # as nbclient or `jupyter console`
    with pytest.raises(ChooseAnOffer) as err:
        await km.start_kernel()
    assert str(err.value) == CHOOSE_AN_OFFER
    assert not km.has_kernel and km.connection_file == ""  # no process, no connection file


@pytest.mark.parametrize("picker", [False])
async def test_the_entry_can_be_turned_off(jp_fetch, picker):
    assert PICKER_KERNEL not in await specs(jp_fetch)  # and the one left before is gone
    assert not (kernels_dir() / PICKER_KERNEL).exists()
