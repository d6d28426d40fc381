"""`walnut-provider register` and `claim`: the provider's side of settlement.

The provider's key is <provider home>/identity.key (a KeyPair.save file). The ledger is
--ledger (a local file), else the home's provider.toml when its [ledger] kind is "sui"
(rpc_url, package_id, key), else $WALNUT_LEDGER, else <provider home>/ledger.sqlite; point
the renter and the provider at one local file to settle on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..common.cli import run_command
from ..common.keys import KeyPair
from ..common.money import format_sui
from ..common.numbers import cli_int
from ..ledger import Ledger, LocalLedger, Voucher
from .config import ProviderConfig, load_config
from .ledger_setup import ledger_identity, node_ledger


def add_ledger_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `register` and `claim` to the walnut-provider parser's subcommands.

    Each sets `func(args) -> int`, which already prints failures as one line on stderr
    and returns 1, so any dispatcher can `sys.exit(args.func(args))`.
    """
    register = subparsers.add_parser("register", help="publish this provider in the registry")
    _common(register)
    register.add_argument("--endpoint", required=True, help="URL renters connect to")
    tls = register.add_mutually_exclusive_group(required=True)
    tls.add_argument("--tls-cert", type=Path, help="the TLS certificate (PEM) renters pin")
    tls.add_argument("--tls-fingerprint", help="SHA-256 of the certificate (hex, colons ok)")
    register.add_argument("--specs", default="{}", help="hardware description, JSON")
    register.add_argument(
        "--price-per-second-mist", type=cli_int("--price-per-second-mist"), required=True,
        help="price in MIST per second",
    )
    register.set_defaults(func=_guarded(cmd_register))

    claim = subparsers.add_parser("claim", help="claim a renter's latest voucher")
    _common(claim)
    source = claim.add_mutually_exclusive_group(required=True)
    source.add_argument("--voucher", type=Path, help="a voucher JSON file ('-' for stdin)")
    source.add_argument("--channel", help="channel id (with --amount-mist and --signature)")
    claim.add_argument("--amount-mist", type=cli_int("--amount-mist"),
                       help="the voucher's cumulative amount")
    claim.add_argument("--signature", help="the voucher's signature, hex")
    claim.add_argument("--close", action="store_true", help="close the channel after claiming")
    claim.set_defaults(func=_guarded(cmd_claim))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=os.environ.get("WALNUT_PROVIDER_HOME"),
        help="provider home holding identity.key (default: $WALNUT_PROVIDER_HOME)",
    )
    parser.add_argument("--ledger", type=Path, help="local ledger file")


def _guarded(func):
    def run(args: argparse.Namespace) -> int:
        return run_command(func, args, prog="walnut-provider")

    return run


def _identity(args: argparse.Namespace) -> KeyPair:
    if args.home is None:
        raise ValueError("name the provider home with --home or $WALNUT_PROVIDER_HOME")
    identity = KeyPair.load(Path(args.home) / "identity.key")
    config = _sui_config(args)
    return ledger_identity(config, identity) if config else identity


def _sui_config(args: argparse.Namespace) -> ProviderConfig | None:
    """The home's provider.toml when it settles on Sui ([ledger] kind = "sui"): register and
    claim then go to its rpc_url, as the node's own claims do; --ledger still wins."""
    if args.ledger or args.home is None:
        return None
    path = Path(args.home) / "provider.toml"
    if not path.exists():
        return None
    config = load_config(path)
    return config if config.ledger == "sui" else None


def _ledger(args: argparse.Namespace) -> Ledger:
    if args.ledger:
        return LocalLedger(args.ledger)
    config = _sui_config(args)
    if config is not None:
        return node_ledger(config, _identity(args))
    env = os.environ.get("WALNUT_LEDGER")
    if env:
        return LocalLedger(Path(env).expanduser())
    if args.home is None:
        raise ValueError("name the ledger with --ledger, $WALNUT_LEDGER or --home")
    return LocalLedger(Path(args.home) / "ledger.sqlite")


def cert_fingerprint(path: Path) -> str:
    """SHA-256 over the certificate's DER bytes, as `openssl x509 -fingerprint -sha256`."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def cmd_register(args: argparse.Namespace) -> int:
    key = _identity(args)
    json.loads(args.specs)  # a ValueError here is a one-line "not JSON" error
    fingerprint = cert_fingerprint(args.tls_cert) if args.tls_cert else args.tls_fingerprint
    with _ledger(args) as ledger:
        entry = ledger.register_provider(
            key,
            endpoint=args.endpoint,
            tls_fingerprint=fingerprint,
            specs=args.specs,
            price_per_second_mist=args.price_per_second_mist,
        )
    print(f"registered  {entry.provider_id}")
    print(f"owner       {entry.owner}")
    print(f"endpoint    {entry.endpoint}")
    print(f"price       {entry.price_per_second_mist} MIST/s")
    return 0


def _voucher(args: argparse.Namespace) -> Voucher:
    if args.voucher is not None:
        text = sys.stdin.read() if str(args.voucher) == "-" else args.voucher.read_text()
        return Voucher.from_json(json.loads(text))
    if args.amount_mist is None or args.signature is None:
        raise ValueError("--channel needs --amount-mist and --signature")
    return Voucher.from_json(
        {"channel_id": args.channel, "amount_mist": args.amount_mist, "signature": args.signature}
    )


def cmd_claim(args: argparse.Namespace) -> int:
    key = _identity(args)
    voucher = _voucher(args)
    with _ledger(args) as ledger:
        paid = ledger.claim(key, voucher.channel_id, voucher.amount_mist, voucher.signature)
        print(f"claimed   {format_sui(paid)}  ({paid} MIST) from {voucher.channel_id}")
        if args.close:
            channel = ledger.provider_close(key, voucher.channel_id)
            print(f"closed    refunded {channel.refunded} MIST to {channel.renter}")
        print(f"balance   {format_sui(ledger.balance(key.address))}")
    return 0
