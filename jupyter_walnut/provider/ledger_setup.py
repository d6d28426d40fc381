"""The ledger a provider settles on, from provider.toml's [ledger] table, and the key it is
known and paid by there."""

from __future__ import annotations

from ..common.keys import KeyPair
from ..ledger import Ledger, LocalLedger, default_ledger_path
from ..ledger.choice import load_sui_key
from ..ledger.sui import SuiLedger
from .config import ProviderConfig


def ledger_identity(config: ProviderConfig, identity: KeyPair) -> KeyPair:
    """The provider's key: identity.key, or on Sui the key [ledger] key names (renters'
    channels pay its address, so it is the node's identity everywhere)."""
    if config.ledger == "sui" and config.ledger_key:
        return load_sui_key(config.ledger_key)
    return identity


def node_ledger(config: ProviderConfig, identity: KeyPair) -> Ledger:
    """[ledger] kind "local": the SQLite file; "sui": the walnut package at rpc_url, which
    connects on its first call (the node starts without it; a session that needs it is
    answered 503 naming rpc_url)."""
    if config.ledger == "sui":
        return SuiLedger(config.ledger_rpc_url, config.ledger_package_id,
                         key=ledger_identity(config, identity),
                         gas_budget=config.ledger_gas_budget)
    return LocalLedger(config.ledger_path or default_ledger_path())
