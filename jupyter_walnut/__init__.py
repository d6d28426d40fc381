from ._version import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict]:
    from .extension.app import WalnutApp

    return [{"module": "jupyter_walnut.extension.app", "app": WalnutApp}]
