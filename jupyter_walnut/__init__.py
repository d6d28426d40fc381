"""Walnut: the renter (renter/), the provider (provider/), the ledger and common code.

The hooks below import the renter only when Jupyter calls them: a provider process that
imports this package must not load the renter's Jupyter Server app or IPython magics.
"""

from ._version import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict]:
    from .renter.extension.app import WalnutApp  # noqa: PLC0415  (renter only, on demand)

    return [{"module": "jupyter_walnut.renter.extension.app", "app": WalnutApp}]


def load_ipython_extension(ipython) -> None:  # %load_ext jupyter_walnut
    from .renter.magics import load_ipython_extension as load  # noqa: PLC0415  (renter only)

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .renter.magics import unload_ipython_extension as unload  # noqa: PLC0415  (renter only)

    unload(ipython)
