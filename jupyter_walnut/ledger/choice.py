"""Which ledger a process settles on, by name: what the renter's `WalnutApp.ledger_class`
and the provider's `[ledger] kind` accept, and the key a Sui ledger signs with."""

from __future__ import annotations

from pathlib import Path

from ..common.keys import KeyPair, sui_active_key

# Short names for the ledger classes; anything else is an import path.
LEDGER_CLASSES = {
    "local": "jupyter_walnut.ledger.local.LocalLedger",
    "sui": "jupyter_walnut.ledger.sui.SuiLedger",
}
SUI_CLI_KEY = "sui-cli"  # the `sui` CLI's active address ($SUI_CONFIG_DIR or ~/.sui)


def resolve_ledger_class(name: str) -> str:
    return LEDGER_CLASSES.get(name.strip().lower(), name)


def load_sui_key(spec: str) -> KeyPair:
    """The key named by a `sui_key` / `[ledger] key` setting: "sui-cli" for the sui CLI's
    active address, else the path of a key file (`suiprivkey1...`, as `KeyPair.save`
    writes it)."""
    if spec == SUI_CLI_KEY:
        return sui_active_key()
    return KeyPair.load(Path(spec).expanduser())
