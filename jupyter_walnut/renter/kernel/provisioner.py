"""`walnut` kernel provisioner: a kernel in a running Walnut session, as a local kernel.

The server's kernel manager gets ordinary local connection info (the bridge's sockets), so
restart, interrupt, shutdown, culling, activity tracking, `/api/kernels`, `/api/sessions`
and server-side clients work unchanged. Kernel lifecycle maps onto the session gateway's
REST API; nothing here ever starts a new paid session.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import KernelProvisionerBase
from traitlets import Float, TraitError, Unicode

from ...common.errors import BadGateway
from ...common.protocol import RESUME_SUBPROTOCOL
from .. import kernel_links
from ..manager import RenterManager
from ..provider_client import ProviderAPIError, ProviderClient
from . import journal_sync
from .bridge import KernelBridge


def working_dir(session, cwd: str | None) -> dict[str, str]:
    """The kernel starts in the workspace root, where a launch's folder was sent (issue
    #16); a notebook in a subfolder of it gets that subfolder, workspace-relative."""
    folder = session.extra.get("folder")
    if not folder or not cwd:
        return {}
    try:
        rel = Path(cwd).resolve().relative_to(Path(folder).resolve())
    except ValueError:  # a notebook outside the folder sent: the workspace root
        return {}
    return {"KERNEL_WORKING_DIR": rel.as_posix()} if rel.parts else {}


class WalnutKernelError(BadGateway, RuntimeError):
    """The remote kernel of a session cannot be started or reached."""


class WalnutProvisioner(KernelProvisionerBase):
    walnut_session = Unicode(config=True, help="the Walnut session this kernel runs in")
    remote_kernel_name = Unicode("python3", config=True, help="kernelspec on the gateway")
    reconnect_timeout = Float(120.0, config=True,  # as long as the provider keeps a link
                              help="seconds to keep retrying a dropped provider connection")

    bridge: KernelBridge | None = None
    remote_kernel_id: str | None = None
    _exit_code: int | None = None
    _dead: asyncio.Event | None = None

    # --- helpers -------------------------------------------------------------------------

    @property
    def renter(self) -> RenterManager:
        return RenterManager.current()

    def _session(self):
        session = self.renter.store.get(self.walnut_session)
        if session is None:
            raise WalnutKernelError(f"unknown Walnut session {self.walnut_session!r}")
        if session.status != "running":
            raise WalnutKernelError(
                f"Walnut session {session.id} is {session.status}"
                + (f": {session.reason}" if session.reason else "")
                + " — launch a new session to get a new kernel")
        return session

    def _client(self, session) -> ProviderClient:
        return self.renter.client(session.provider_url)

    async def _gateway(self, method: str, path: str, body: Any = None) -> Any:
        session = self._session()
        return await self._client(session).gateway(session.id, session.access_token, method,
                                                   path, body)

    # --- KernelProvisionerBase -------------------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self.bridge is not None and self._exit_code is None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._session()  # fail early, with the reason, if the session is not running
        kwargs = await super().pre_launch(**kwargs)
        kwargs.setdefault("cmd", kwargs.get("cmd") or [])
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        if self.bridge is not None and self.remote_kernel_id is not None:
            # a restart: the remote kernel was restarted in place; same sockets, same key
            self._exit_code = None
            self._dead = asyncio.Event()
            return self.bridge.connection_info()
        session = self._session()
        client = self._client(session)
        self.remote_kernel_id = await self._existing_remote_kernel(session)
        if self.remote_kernel_id is None:
            env = {k: v for k, v in (kwargs.get("env") or {}).items()
                   if k.startswith(("JPY_", "KERNEL_")) and "TOKEN" not in k}
            env.pop("KERNEL_WORKING_DIR", None)  # a path of this machine means nothing there
            env.update(working_dir(session, kwargs.get("cwd")))
            try:
                kernel = await client.gateway(session.id, session.access_token, "POST",
                                              "api/kernels",
                                              {"name": self.remote_kernel_name, "env": env})
            except ProviderAPIError as exc:
                raise WalnutKernelError(f"the provider could not start a kernel: {exc}") \
                    from exc
            self.remote_kernel_id = kernel["id"]
            self.renter.store.save_kernel(self.kernel_id, session.id, self.remote_kernel_id)

        async def connect(ws_session: str, ack: int):
            current = self._session()
            return await self._client(current).kernel_websocket(
                current.id, current.access_token, self.remote_kernel_id,
                subprotocols=[RESUME_SUBPROTOCOL], session=ws_session, ack=ack)

        async def alive() -> tuple[bool, str]:
            return await self.renter.session_alive(self.walnut_session)

        trusted = self._trusts_outputs(session)
        if trusted:
            self.log.warning("walnut kernel on session %s: outputs of %s are trusted "
                             "(WalnutApp.trusted_output_providers)", session.id,
                             session.provider_url)
        self.bridge = KernelBridge(connect, self._remote_shutdown, alive,
                                   reconnect_timeout=self.reconnect_timeout,
                                   trust_outputs=trusted)
        self.bridge.on_dead = self._on_dead
        self.bridge.on_link_state = lambda state: kernel_links.set_state(
            self.walnut_session, self.kernel_id, state)
        self._dead = asyncio.Event()
        self._exit_code = None
        try:
            await self.bridge.start()
        except Exception as exc:
            await self.bridge.close()
            self.bridge = None
            raise WalnutKernelError(f"could not connect to the remote kernel: {exc}") from exc
        # outputs of requests that ran while this server was away reach the notebook (#17)
        journal_sync.attached(self, kwargs.get("env"), trusted)
        self.bridge.on_reply = lambda msg_id: journal_sync.shown(self, msg_id)
        self.renter.on_end(self.walnut_session,
                           lambda s: self.bridge and self.bridge.mark_dead(
                               f"the session {s.status}: {s.reason}"))
        self.log.info("walnut kernel %s on session %s", self.remote_kernel_id,
                      self.walnut_session)
        return self.bridge.connection_info()

    def _trusts_outputs(self, session) -> bool:
        """Whether the renter opted in to this provider's raw outputs (off by default)."""
        trusted = self.renter.trusted_output_providers
        url = session.provider_url.rstrip("/")
        return url in trusted or url.split("#", 1)[0].rstrip("/") in trusted

    async def _existing_remote_kernel(self, session) -> str | None:
        """After a server restart, this kernel id may already have a live remote kernel:
        attach to it (its state intact) instead of starting another."""
        known = self.renter.store.kernel(self.kernel_id)
        if known is None or known[0] != session.id:
            return None
        try:
            await self._client(session).gateway(session.id, session.access_token, "GET",
                                                f"api/kernels/{known[1]}")
        except ProviderAPIError:
            self.renter.store.forget_kernel(self.kernel_id)
            return None
        self.log.info("re-attached walnut kernel %s to remote kernel %s", self.kernel_id,
                      known[1])
        return known[1]

    def _on_dead(self, reason: str) -> None:
        self.log.warning("walnut kernel on session %s is dead: %s", self.walnut_session, reason)
        # restarting cannot help once the session is gone: keep the kernel listed as dead
        stop_restarter = getattr(self.parent, "stop_restarter", None)
        if stop_restarter is not None:
            stop_restarter()
        self._set_exit(1)

    def _set_exit(self, code: int) -> None:
        self._exit_code = code
        if self._dead is not None:
            self._dead.set()

    async def _remote_shutdown(self, restart: bool) -> None:
        """A shutdown_request: restart the remote kernel in place, or delete it."""
        if self.remote_kernel_id is None or self._exit_code is not None:
            self._set_exit(0)
            return
        if not restart and self.renter.keeps_remote_kernel(self.walnut_session):
            # the server exits but the session stays (or is away): the next one re-attaches
            self._set_exit(0)
            return
        try:
            if restart:
                await self._gateway("POST", f"api/kernels/{self.remote_kernel_id}/restart")
            else:
                await self._gateway("DELETE", f"api/kernels/{self.remote_kernel_id}")
        except (ProviderAPIError, WalnutKernelError) as exc:
            if restart:
                raise
            self.log.info("remote kernel already gone: %s", exc)
        if not restart:
            self.renter.store.forget_kernel(self.kernel_id)
        self._set_exit(0)

    async def poll(self) -> int | None:
        return self._exit_code

    async def wait(self) -> int | None:
        if self._dead is not None and self._exit_code is None:
            await self._dead.wait()
        return self._exit_code

    async def send_signal(self, signum: int) -> None:
        if signum == signal.SIGINT:
            if getattr(self.parent, "shutting_down", False) and \
                    self.renter.keeps_remote_kernel(self.walnut_session):
                return  # the server exits (jupyter_client interrupts first): the cell runs on
            await self._gateway("POST", f"api/kernels/{self.remote_kernel_id}/interrupt")
        elif signum in (signal.SIGTERM, signal.SIGKILL):
            await self._remote_shutdown(restart=False)

    async def kill(self, restart: bool = False) -> None:
        if self._exit_code is None:
            await self._remote_shutdown(restart)

    async def terminate(self, restart: bool = False) -> None:
        await self.kill(restart)

    async def cleanup(self, restart: bool = False) -> None:
        if restart and self._exit_code == 0:
            return  # the bridge and its sockets carry over to the restarted kernel
        if self.bridge is not None:
            await self.bridge.close()
            kernel_links.forget(self.walnut_session, self.kernel_id)
        self.bridge = None
        self.remote_kernel_id = None

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 30.0)  # a REST round trip to the provider, then the kernel

    async def post_launch(self, **kwargs: Any) -> None:
        await super().post_launch(**kwargs)
        # jupyter_client lists a started kernel one loop turn before jupyter_server gives it
        # its activity marker; GET /api/kernels in between was a 500 (the unset trait),
        # which a client polling a restarted server for its re-attached kernels hit
        if self.parent is not None and self.parent.has_trait("last_activity"):
            try:
                unset = self.parent.last_activity is None
            except TraitError:  # an Instance trait never set cannot even be read
                unset = True
            if unset:
                self.parent.last_activity = datetime.now(UTC)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, 30.0)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(walnut_session=self.walnut_session, remote_kernel_id=self.remote_kernel_id)
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.walnut_session = provisioner_info.get("walnut_session", self.walnut_session)
        self.remote_kernel_id = provisioner_info.get("remote_kernel_id")
