"""`walnut-picker` kernel provisioner: the "New Walnut kernel…" entry, which starts nothing.

The `walnut-new` kernelspec (renter/kernelspecs.py) puts Walnut where people start kernels:
the kernel picker, the launcher, every Jupyter client's kernel list. In JupyterLab the
labextension catches the choice before any kernel starts and opens the offers view; a
client without it (Notebook 7 without the labextension, nbclient, `jupyter console`, VS Code)
reaches this provisioner, which refuses at once, before anything is launched or paid, with
what to do instead. Nothing runs on this machine and nothing waits on a provider.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.provisioning import KernelProvisionerBase
from tornado.web import HTTPError

CHOOSE_AN_OFFER = (  # no "%": tornado formats an HTTPError's message
    "“New Walnut kernel…” starts no kernel by itself: choose an offer in the Walnut offers "
    "view of JupyterLab (or launch a session with the walnut magics), then pick the "
    "session's kernel, “Python 3 — walnut: <node> · <hardware>”.")


class ChooseAnOffer(HTTPError):
    """The refusal, as Jupyter Server's kernel and session APIs pass it on: status 400 and
    this message (a plain exception would reach a browser as "Unhandled error")."""

    def __init__(self) -> None:
        super().__init__(400, CHOOSE_AN_OFFER)
        self.message = CHOOSE_AN_OFFER

    def __str__(self) -> str:  # what nbclient, `jupyter console` and /api/sessions show
        return self.message


class WalnutPickerProvisioner(KernelProvisionerBase):
    """Refuses in pre_launch: no process, no connection file, no provider request."""

    @property
    def has_process(self) -> bool:
        return False

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        raise ChooseAnOffer()

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        raise ChooseAnOffer()  # unreachable through jupyter_client: pre_launch refused

    async def poll(self) -> int | None:
        return 1

    async def wait(self) -> int | None:
        return 1

    async def send_signal(self, signum: int) -> None:
        return None

    async def kill(self, restart: bool = False) -> None:
        return None

    async def terminate(self, restart: bool = False) -> None:
        return None

    async def cleanup(self, restart: bool = False) -> None:
        return None
