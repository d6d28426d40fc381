"""`walnut wallet`: the renter's key and its balance on the local ledger.

The key lives at <walnut home>/wallet.key (owner-only, Sui's `suiprivkey1...` form);
<walnut home> is $WALNUT_HOME or <jupyter data dir>/walnut. The local ledger is
$WALNUT_LEDGER or <walnut home>/ledger.sqlite, so a provider on the same machine can
share it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...common.cli import CommandError
from ...common.keys import KeyPair, load_sui_keystore, sui_active_key, to_sui_keystore_entry
from ...common.money import format_sui, parse_sui
from ...common.numbers import cli_int
from ...ledger import LocalLedger, default_ledger_path, walnut_home


def sui_amount(text: str) -> int:
    """MIST from a SUI amount typed by a person: ASCII digits only (isdigit() is not)."""
    if not text.isascii() or len(text) > 40:
        raise ValueError(f"not an amount of SUI: {text[:40]!r}")
    return parse_sui(text)


def wallet_path() -> Path:
    return walnut_home() / "wallet.key"


def load_wallet() -> KeyPair:
    path = wallet_path()
    if not path.exists():
        raise CommandError(f"no wallet at {path}; run `walnut wallet create` or `import`")
    return KeyPair.load(path)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    wallet = subparsers.add_parser("wallet", help="the renter's key and balance")
    wallet.add_argument("--ledger", type=Path, help="local ledger file (default: $WALNUT_LEDGER)")
    commands = wallet.add_subparsers(dest="wallet_command", metavar="ACTION", required=True)

    create = commands.add_parser("create", help="make a new key")
    create.set_defaults(func=cmd_create)

    imp = commands.add_parser("import", help="use an existing Sui key")
    source = imp.add_mutually_exclusive_group()
    source.add_argument(
        "--from-sui",
        action="store_true",
        help="the sui CLI's active key (~/.sui/sui_config or $SUI_CONFIG_DIR)",
    )
    source.add_argument("--keystore", type=Path, help="a sui.keystore file (with --address)")
    imp.add_argument("--address", help="which key of --keystore")
    imp.add_argument("--sui-config", type=Path, help="the sui CLI config directory")
    imp.set_defaults(func=cmd_import)
    imp.description = (
        "Without --from-sui or --keystore, reads one key (suiprivkey1... or a sui.keystore "
        "entry) from standard input, so it never lands in shell history."
    )

    export = commands.add_parser("export", help="print the secret key (handle with care)")
    export.add_argument("--format", choices=["bech32", "keystore"], default="bech32")
    export.set_defaults(func=cmd_export)

    commands.add_parser("address", help="print the wallet's address").set_defaults(func=cmd_address)

    balance = commands.add_parser("balance", help="balance on the local ledger")
    balance.add_argument("--address", help="another address than the wallet's")
    balance.set_defaults(func=cmd_balance)

    fund = commands.add_parser("fund", help="mint test funds on the local ledger (faucet)")
    amount = fund.add_mutually_exclusive_group(required=True)
    amount.add_argument("sui", nargs="?", help="amount in SUI, e.g. 1.5")
    amount.add_argument("--mist", type=cli_int("--mist", minimum=1), help="amount in MIST")
    fund.add_argument("--address", help="another address than the wallet's")
    fund.set_defaults(func=cmd_fund)


def _ledger(args: argparse.Namespace) -> LocalLedger:
    return LocalLedger(args.ledger or default_ledger_path())


def _save_new(key: KeyPair) -> None:
    path = wallet_path()
    key.save(path)  # refuses to replace an existing wallet
    print(f"address  {key.address}")
    print(f"key file {path}")


def cmd_create(args: argparse.Namespace) -> int:
    _save_new(KeyPair.generate())
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    if args.from_sui:
        key = sui_active_key(args.sui_config)
    elif args.keystore:
        keys = load_sui_keystore(args.keystore)
        wanted = (args.address or "").lower()
        matches = [k for k in keys if not wanted or k.address == wanted]
        if len(matches) != 1:
            raise CommandError(
                f"{len(matches)} Ed25519 keys in {args.keystore} match; name one with --address"
            )
        key = matches[0]
    else:
        text = sys.stdin.readline().strip()
        if not text:
            raise CommandError("no key on standard input")
        key = KeyPair.from_sui_keystore_entry(text)
    _save_new(key)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    key = load_wallet()
    print("warning: this is your secret key; anyone holding it can spend", file=sys.stderr)
    print(key.to_bech32() if args.format == "bech32" else to_sui_keystore_entry(key))
    return 0


def cmd_address(args: argparse.Namespace) -> int:
    print(load_wallet().address)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    address = args.address or load_wallet().address
    with _ledger(args) as ledger:
        mist = ledger.balance(address)
    print(f"{address}  {format_sui(mist)}  ({mist} MIST)")
    return 0


def cmd_fund(args: argparse.Namespace) -> int:
    mist = args.mist if args.mist is not None else sui_amount(args.sui)
    address = args.address or load_wallet().address
    with _ledger(args) as ledger:
        balance = ledger.fund(address, mist)
    print(f"funded   {format_sui(mist)} to {address}")
    print(f"balance  {format_sui(balance)}  ({balance} MIST)")
    return 0
