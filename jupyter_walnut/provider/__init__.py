"""The provider's side: `walnut-provider`, its node, sessions and settlement.

What only a provider needs comes with the `provider` extra; a renter's install lacks it, so
say which command to run instead of failing on the first import deep inside.
"""

from importlib.util import find_spec

PROVIDER_PACKAGES = ("docker", "psutil", "prometheus_client", "kernel_gateway", "nbclient")

_missing = [name for name in PROVIDER_PACKAGES if find_spec(name) is None]
if _missing:
    raise ImportError(
        f"walnut-provider needs the provider extra: pip install \"jupyter-walnut[provider]\" "
        f"(missing: {', '.join(_missing)})")
