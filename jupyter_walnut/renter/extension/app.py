"""`jupyter_walnut` as a Jupyter Server extension (an ExtensionApp configured by traitlets)."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop
from traitlets import Bool, Float, Int, List, Type, Unicode, default

from ..._version import __version__
from ...common.errors import WalnutError
from ...common.keys import KeyPair
from ...ledger import Ledger, LocalLedger, default_ledger_path, walnut_home
from ...ledger.choice import load_sui_key, resolve_ledger_class
from ...ledger.sui import DEFAULT_GAS_BUDGET, SuiLedger
from ..idle import DEFAULT_COST_MIST
from ..kernelspecs import remove_picker_kernelspec, write_picker_kernelspec
from ..manager import RenterManager
from .nodelay import nodelay_class
from .routes import handlers


class LedgerClass(Type):
    """A `Ledger` subclass: "local", "sui" or an import path."""

    def _resolve_string(self, string: str):
        return super()._resolve_string(resolve_ledger_class(string))


class WalnutApp(ExtensionApp):
    name = "jupyter_walnut"
    description = "Rent remote GPU/CPU kernels by the second from Jupyter."
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
    ledger_class = LedgerClass(
        LocalLedger, klass=Ledger, config=True,
        help="The ledger this renter pays on: 'local' (LocalLedger, the SQLite file at "
             "ledger_path; the default) or 'sui' (SuiLedger: the walnut Move package at "
             "sui_package_id through the GraphQL service at sui_rpc_url), or the import path "
             "of another Ledger class.")
    sui_rpc_url = Unicode(
        config=True, help="The Sui GraphQL service, e.g. http://127.0.0.1:9125/graphql "
                          "(default: $WALNUT_SUI_RPC_URL). With ledger_class 'sui'.")
    sui_package_id = Unicode(
        config=True, help="The published walnut Move package, 0x... "
                          "(default: $WALNUT_SUI_PACKAGE). With ledger_class 'sui'.")
    sui_key = Unicode(
        "", config=True,
        help="The key that pays on Sui: empty for the Walnut wallet "
             "(<walnut home>/wallet.key), 'sui-cli' for the sui CLI's active address "
             "($SUI_CONFIG_DIR or ~/.sui/sui_config), or the path of a key file "
             "(suiprivkey1...). With ledger_class 'sui'.")
    sui_gas_budget = Int(
        DEFAULT_GAS_BUDGET, config=True,
        help="Most MIST of gas one Sui transaction may use (the node charges what it uses).")
    challenge_period = Int(
        600, config=True,
        help="Seconds a provider has to claim after this renter asks to close a channel; "
             "also how long a vanished provider's deposit stays locked.")
    picker_kernelspec = Bool(
        True, config=True,
        help="List \"New Walnut kernel…\" (the `walnut-new` kernelspec) in the kernel picker "
             "and the launcher: in JupyterLab choosing it opens the offers view filtered by "
             "the notebook's imports; it never starts a kernel by itself.")
    tcp_nodelay = Bool(True, config=True,
                       help="Turn Nagle's algorithm off on every kernel websocket of the server.")
    trusted_output_providers = List(
        Unicode(), config=True,
        help="DANGEROUS. Provider URLs (as in `providers`, with or without the #sha256= pin) "
             "whose kernel outputs reach your browser unfiltered: their HTML, JavaScript and "
             "custom renderers run in JupyterLab as you, with your server's API (files, "
             "terminals, other kernels). By default every Walnut kernel's outputs are reduced "
             "to passive content; trust only a provider you run yourself.")

    idle_stop_minutes = Float(
        None, allow_none=True, config=True,
        help="Minutes a session's kernels may sit idle (no cell running, no message to or "
             "from a kernel) before the provider stops it, results saved; 0 = never. "
             "Unset (the default): the time that costs idle_stop_cost_mist at the offer's "
             "price, within 10 min to 3 h. A launch's idle_stop_minutes overrides it.")
    idle_stop_cost_mist = Int(
        DEFAULT_COST_MIST, config=True, min=0,
        help="MIST of idle time a session may cost before it stops, when idle_stop_minutes "
             "is unset: an expensive shape stops sooner than a cheap one.")

    @default("providers")
    def _default_providers(self) -> list[str]:
        env = os.environ.get("WALNUT_PROVIDERS", "")
        return [u.strip() for u in env.split(",") if u.strip()]

    @default("walnut_home")
    def _default_home(self) -> str:
        return str(walnut_home())

    @default("sui_rpc_url")
    def _default_sui_rpc_url(self) -> str:
        return os.environ.get("WALNUT_SUI_RPC_URL", "")

    @default("sui_package_id")
    def _default_sui_package_id(self) -> str:
        return os.environ.get("WALNUT_SUI_PACKAGE", "")

    def make_ledger(self) -> tuple[Ledger, KeyPair | None]:
        """The configured ledger, and the key that pays on it (None: the Walnut wallet).

        A Sui ledger connects on its first call: the server starts without its node, and
        each request that needs it answers 503 naming sui_rpc_url until it answers."""
        cls = self.ledger_class
        if not issubclass(cls, SuiLedger):
            return cls(self.ledger_path or default_ledger_path()), None
        missing = [name for name in ("sui_rpc_url", "sui_package_id") if not getattr(self, name)]
        if missing:
            raise WalnutError(f"WalnutApp.ledger_class is {cls.__name__}: set "
                              + " and ".join(f"WalnutApp.{name}" for name in missing))
        key = load_sui_key(self.sui_key) if self.sui_key else None
        return cls(self.sui_rpc_url, self.sui_package_id, key=key,
                   gas_budget=self.sui_gas_budget), key

    def initialize_settings(self) -> None:
        ledger, key = self.make_ledger()
        self.manager = RenterManager(Path(self.walnut_home), self.providers, key=key,
                                     ledger=ledger, challenge_period_s=self.challenge_period,
                                     parent=self)
        self.manager.poll_interval_s = self.poll_interval
        self.manager.idle_stop_minutes = self.idle_stop_minutes  # issue #17
        self.manager.idle_stop_cost_mist = self.idle_stop_cost_mist
        self.manager.trusted_output_providers = {u.rstrip("/") for u in
                                                 self.trusted_output_providers}
        self.manager.make_current()
        self.manager.restore_kernelspecs()
        if self.picker_kernelspec:
            write_picker_kernelspec()
        else:
            remove_picker_kernelspec()
        self.settings["walnut_manager"] = self.manager
        if self.tcp_nodelay:
            # self.settings is a copy of the server's, written back after this method
            base = self.settings.get("kernel_websocket_connection_class")
            if base is not None:
                self.settings["kernel_websocket_connection_class"] = nodelay_class(base)
        # follow session cost once the server's event loop runs
        IOLoop.current().add_callback(self.manager.start_polling)
        IOLoop.current().add_callback(self._readopt_kernels)
        self.log.info("Walnut %s: %d provider(s), wallet %s on the %s ledger%s", __version__,
                      len(self.providers), self.manager.key.address, self.manager.network,
                      f" at {self.sui_rpc_url}" if isinstance(ledger, SuiLedger) else "")

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
