from ._version import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict]:
    from .renter.extension.app import WalnutApp

    return [{"module": "jupyter_walnut.renter.extension.app", "app": WalnutApp}]


def load_ipython_extension(ipython) -> None:  # %load_ext jupyter_walnut
    from .renter.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .renter.magics import unload_ipython_extension as unload

    unload(ipython)
