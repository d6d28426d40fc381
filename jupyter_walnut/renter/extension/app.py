"""`jupyter_walnut` as a Jupyter Server extension (an ExtensionApp configured by traitlets)."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop
from traitlets import Bool, Float, Int, List, Unicode, default

from ..._version import __version__
from ..manager import RenterManager
from .nodelay import nodelay_class


class WalnutApp(ExtensionApp):
    name = "jupyter_walnut"
    description = "Rent remote GPU/CPU kernels by the second from Jupyter."
from .routes import handlers
    version = __version__

    providers = List(
        Unicode(), config=True,
        help="Provider URLs to offer (also $WALNUT_PROVIDERS, comma-separated).")
    walnut_home = Unicode(config=True, help="Renter state directory (wallet, sessions).")
    stop_sessions_on_exit = Bool(
        True, config=True,
        help="Stop this server's Walnut sessions when it shuts down, so nobody pays for a "
             "forgotten kernel.")
    poll_interval = Float(2.0, config=True, help="Seconds between session cost refreshes.")
    ledger_path = Unicode(
        "", config=True,
        help="Local ledger file (default: $WALNUT_LEDGER or <walnut home>/ledger.sqlite).")
    challenge_period = Int(
        600, config=True,
        help="Seconds a provider has to claim after this renter asks to close a channel; "
             "also how long a vanished provider's deposit stays locked.")
    tcp_nodelay = Bool(True, config=True,
                       help="Turn Nagle's algorithm off on every kernel websocket of the server.")
    trusted_output_providers = List(
        Unicode(), config=True,
        help="DANGEROUS. Provider URLs (as in `providers`, with or without the #sha256= pin) "
             "whose kernel outputs reach your browser unfiltered: their HTML, JavaScript and "
             "custom renderers run in JupyterLab as you, with your server's API (files, "
             "terminals, other kernels). By default every Walnut kernel's outputs are reduced "
             "to passive content; trust only a provider you run yourself.")

    @default("providers")
    def _default_providers(self) -> list[str]:
        env = os.environ.get("WALNUT_PROVIDERS", "")
        return [u.strip() for u in env.split(",") if u.strip()]

    @default("walnut_home")
    def _default_home(self) -> str:
        from ...ledger import walnut_home

        return str(walnut_home())

    def initialize_settings(self) -> None:
        from ...ledger import LocalLedger, default_ledger_path

        ledger = LocalLedger(self.ledger_path or default_ledger_path())
        self.manager = RenterManager(Path(self.walnut_home), self.providers, ledger=ledger,
                                     challenge_period_s=self.challenge_period)
        self.manager.poll_interval_s = self.poll_interval
        self.manager.trusted_output_providers = {u.rstrip("/") for u in
                                                 self.trusted_output_providers}
        self.manager.make_current()
        self.manager.restore_kernelspecs()
        self.settings["walnut_manager"] = self.manager
        if self.tcp_nodelay:
            # self.settings is a copy of the server's, written back after this method
            base = self.settings.get("kernel_websocket_connection_class")
            if base is not None:
                self.settings["kernel_websocket_connection_class"] = nodelay_class(base)
        # follow session cost once the server's event loop runs
        IOLoop.current().add_callback(self.manager.start_polling)
        IOLoop.current().add_callback(self._readopt_kernels)
        self.log.info("Walnut %s: %d provider(s), wallet %s", __version__, len(self.providers),
                      self.manager.key.address)

    async def _readopt_kernels(self) -> None:
        """Kernels of running sessions that outlived the last server: same ids, same state."""
        km = self.serverapp.kernel_manager
        for local_id, session_id, _remote in self.manager.store.kernels():
            session = self.manager.store.get(session_id)
            if session is None or session.status != "running" or local_id in km:
                if session is None or session.status != "running":
                    self.manager.store.forget_kernel(local_id)
                continue
            try:
                await km.start_kernel(kernel_id=local_id, kernel_name=f"walnut-{session_id}")
            except Exception as exc:
                self.log.warning("could not re-attach walnut kernel %s: %s", local_id, exc)
                self.manager.store.forget_kernel(local_id)
            else:
                self.log.info("re-attached walnut kernel %s (session %s)", local_id, session_id)

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    async def stop_extension(self) -> None:
        await self.manager.shutdown(stop_sessions=self.stop_sessions_on_exit)
