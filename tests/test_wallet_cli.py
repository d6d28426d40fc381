"""`walnut wallet` and `walnut-provider register/claim`, as a user runs them."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import stat
import subprocess
import sys

import pytest

from jupyter_walnut.common.keys import KeyPair, to_sui_keystore_entry
from jupyter_walnut.common.money import format_sui, parse_sui
from jupyter_walnut.ledger import LocalLedger, Voucher
from jupyter_walnut.provider.cli_ledger import add_ledger_commands, cert_fingerprint
from jupyter_walnut.renter.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WALNUT_HOME", str(tmp_path / "walnut"))
    monkeypatch.delenv("WALNUT_LEDGER", raising=False)
    return tmp_path / "walnut"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_address_fund_balance(home, capsys):
    code, out, _ = run(capsys, "wallet", "create")
    assert code == 0 and "address  0x" in out
    key_file = home / "wallet.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    address = KeyPair.load(key_file).address
    assert run(capsys, "wallet", "address")[1].strip() == address
    code, out, _ = run(capsys, "wallet", "fund", "1.5")
    assert code == 0 and "balance  1.5 SUI  (1500000000 MIST)" in out
    code, out, _ = run(capsys, "wallet", "fund", "--mist", "7")
    code, out, _ = run(capsys, "wallet", "balance")
    assert out.strip() == f"{address}  1.500000007 SUI  (1500000007 MIST)"
    assert (home / "ledger.sqlite").exists()


def test_secret_never_printed_except_by_export(home, capsys):
    _, create_out, create_err = run(capsys, "wallet", "create")
    secret = KeyPair.load(home / "wallet.key").to_bech32()
    assert secret not in create_out + create_err
    code, out, err = run(capsys, "wallet", "export")
    assert code == 0 and out.strip() == secret and "secret" in err


def test_errors_are_one_line_with_nonzero_exit(home, capsys):
    code, out, err = run(capsys, "wallet", "address")
    assert code == 1 and err.count("\n") == 1 and err.startswith("walnut: error: no wallet")
    run(capsys, "wallet", "create")
    code, _, err = run(capsys, "wallet", "create")
    assert code == 1 and "refusing to overwrite" in err and err.count("\n") == 1
    code, _, err = run(capsys, "wallet", "fund", "0.0000000001")
    assert code == 1 and "9 decimal places" in err
    code, _, err = run(capsys, "wallet", "fund", "0")
    assert code == 1 and "E_ZERO_AMOUNT" in err


def test_import_from_stdin_and_sui_cli(home, tmp_path, capsys, monkeypatch):
    import io

    key = KeyPair.generate()
    monkeypatch.setattr(sys, "stdin", io.StringIO(to_sui_keystore_entry(key) + "\n"))
    code, out, _ = run(capsys, "wallet", "import")
    assert code == 0 and key.address in out
    assert KeyPair.load(home / "wallet.key").address == key.address

    (home / "wallet.key").unlink()
    sui_dir = tmp_path / "sui_config"
    sui_dir.mkdir()
    other = KeyPair.generate()
    (sui_dir / "sui.keystore").write_text(json.dumps([to_sui_keystore_entry(other)]))
    (sui_dir / "client.yaml").write_text(
        f'keystore:\n  File: {sui_dir / "sui.keystore"}\nactive_address: "{other.address}"\n'
    )
    monkeypatch.setenv("SUI_CONFIG_DIR", str(sui_dir))
    code, out, _ = run(capsys, "wallet", "import", "--from-sui")
    assert code == 0 and other.address in out


def test_ledger_env_lets_two_homes_share_one_file(home, tmp_path, capsys, monkeypatch):
    shared = tmp_path / "shared.sqlite"
    monkeypatch.setenv("WALNUT_LEDGER", str(shared))
    addr = KeyPair.generate().address
    run(capsys, "wallet", "fund", "--address", addr, "--mist", "42")
    with LocalLedger(shared) as ledger:
        assert ledger.balance(addr) == 42


def test_subprocess_exit_codes(home):
    env = {**os.environ, "WALNUT_HOME": str(home)}
    cmd = [sys.executable, "-m", "jupyter_walnut.renter.cli", "wallet"]
    done = subprocess.run([*cmd, "balance"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "no wallet" in done.stderr
    done = subprocess.run([*cmd, "bogus"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    done = subprocess.run([*cmd, "create"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "address  0x" in done.stdout


def test_parse_sui_is_exact():
    assert parse_sui("1") == 1_000_000_000
    assert parse_sui("0.000000001") == 1
    assert parse_sui("12,345.6 SUI") == 12_345_600_000_000
    for bad in ["", ".", "1.2.3", "-1", "1e3", "abc"]:
        with pytest.raises(ValueError):
            parse_sui(bad)


def test_format_sui_is_exact_and_reads_back():
    assert format_sui(0) == "0 SUI"
    assert format_sui(1) == "0.000000001 SUI"
    assert format_sui(1_500_000_000) == "1.5 SUI"
    assert format_sui(12_345_600_000_000) == "12,345.6 SUI"
    assert format_sui(-1_500_000_000) == "-1.5 SUI"
    big = 2**64 - 1  # past float precision: every digit kept
    assert format_sui(big) == "18,446,744,073.709551615 SUI"
    for mist in (0, 1, 999_999_999, 10**9, big):
        assert parse_sui(format_sui(mist)) == mist


# --- walnut-provider register / claim --------------------------------------------


def provider_main(argv):
    parser = argparse.ArgumentParser(prog="walnut-provider")
    add_ledger_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def self_signed_cert(path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "walnut-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.fingerprint(hashes.SHA256()).hex()


def test_provider_register_and_claim(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WALNUT_LEDGER", raising=False)
    phome = tmp_path / "provider"
    provider = KeyPair.generate()
    provider.save(phome / "identity.key")
    cert = tmp_path / "cert.pem"
    expected_fp = self_signed_cert(cert)
    assert cert_fingerprint(cert) == expected_fp
    base = ["--home", str(phome)]
    code = provider_main(
        [
            "register",
            *base,
            "--endpoint",
            "https://p:8443",
            "--tls-cert",
            str(cert),
            "--specs",
            '{"gpus": 0}',
            "--price-per-second-mist",
            "1000",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "registered  0x" in out and provider.address in out
    ledger_path = phome / "ledger.sqlite"
    renter, vkey = KeyPair.generate(), KeyPair.generate()
    with LocalLedger(ledger_path) as ledger:
        assert ledger.list_providers()[0].tls_fingerprint == expected_fp
        ledger.fund(renter.address, 10_000)
        channel = ledger.open_channel(renter, provider.address, vkey.public_key, 5000, 1000, 60)
    voucher_file = tmp_path / "voucher.json"
    voucher_file.write_text(json.dumps(Voucher.sign(vkey, channel.channel_id, 3000).to_json()))
    code = provider_main(["claim", *base, "--voucher", str(voucher_file), "--close"])
    out = capsys.readouterr().out
    assert code == 0 and "(3000 MIST)" in out and "refunded 2000 MIST" in out
    code = provider_main(["claim", *base, "--voucher", str(voucher_file)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("walnut-provider: error: E_CHANNEL_CLOSED")
    with LocalLedger(ledger_path) as ledger:
        assert ledger.balance(provider.address) == 3000
        assert ledger.balance(renter.address) == 7000


def test_provider_claim_with_flags_refuses_forgery(tmp_path, capsys, monkeypatch):
    ledger_path = tmp_path / "l.sqlite"
    monkeypatch.setenv("WALNUT_LEDGER", str(ledger_path))
    provider, renter, vkey = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    provider.save(tmp_path / "identity.key")
    with LocalLedger(ledger_path) as ledger:
        ledger.fund(renter.address, 100)
        channel = ledger.open_channel(renter, provider.address, vkey.public_key, 100, 1, 60)
    forged = Voucher.sign(KeyPair.generate(), channel.channel_id, 50)
    code = provider_main(
        [
            "claim",
            "--home",
            str(tmp_path),
            "--channel",
            channel.channel_id,
            "--amount-mist",
            "50",
            "--signature",
            forged.signature.hex(),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "E_BAD_SIGNATURE" in err and err.count("\n") == 1
    code = provider_main(
        [
            "register",
            "--home",
            str(tmp_path / "nope"),
            "--endpoint",
            "x",
            "--tls-fingerprint",
            "ab" * 32,
            "--price-per-second-mist",
            "1",
        ]
    )
    assert code == 1 and "no key at" in capsys.readouterr().err
