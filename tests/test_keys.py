"""Keys and addresses in Sui's formats."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

from jupyter_walnut.common.keys import (
    KeyError_,
    KeyPair,
    load_sui_keystore,
    sui_active_key,
    sui_address,
    to_sui_keystore_entry,
    verify,
)

SEED = hashlib.sha256(b"walnut key test").digest()


def test_address_is_blake2b_of_flag_and_public_key():
    key = KeyPair.from_seed(SEED)
    expected = hashlib.blake2b(b"\x00" + key.public_key, digest_size=32).hexdigest()
    assert key.address == "0x" + expected
    assert sui_address(key.public_key) == key.address


def test_bech32_round_trip_and_checksum():
    key = KeyPair.from_seed(SEED)
    text = key.to_bech32()
    assert text.startswith("suiprivkey1")
    assert KeyPair.from_bech32(text).seed == SEED
    broken = text[:-1] + ("q" if text[-1] != "q" else "p")
    with pytest.raises(KeyError_, match="checksum"):
        KeyPair.from_bech32(broken)


def test_matches_pysui_when_installed():
    crypto = pytest.importorskip("pysui.sui.sui_crypto")
    key = KeyPair.generate()
    theirs = crypto.keypair_from_keystring(key.to_bech32())
    assert theirs.public_key.key_bytes == key.public_key
    assert theirs.to_bech32() == key.to_bech32()
    assert crypto.keypair_from_keystring(to_sui_keystore_entry(key)).to_bech32() == key.to_bech32()


def test_keystore_entry_import():
    key = KeyPair.from_seed(SEED)
    assert KeyPair.from_sui_keystore_entry(to_sui_keystore_entry(key)).seed == SEED
    with pytest.raises(KeyError_):
        KeyPair.from_sui_keystore_entry("AQ" + to_sui_keystore_entry(key)[2:])  # secp256k1 flag


def test_save_is_owner_only_and_refuses_overwrite(tmp_path):
    key = KeyPair.from_seed(SEED)
    path = tmp_path / "sub" / "wallet.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyPair.load(path).address == key.address
    with pytest.raises(KeyError_, match="refusing to overwrite"):
        KeyPair.generate().save(path)
    assert KeyPair.load(path).address == key.address


def test_repr_never_shows_the_secret():
    key = KeyPair.from_seed(SEED)
    assert key.to_bech32() not in repr(key)
    assert SEED.hex() not in repr(key)


def test_sign_and_verify():
    key = KeyPair.from_seed(SEED)
    sig = key.sign(b"msg\x00with zero")
    assert verify(key.public_key, sig, b"msg\x00with zero")
    assert not verify(key.public_key, sig, b"msgwith zero")
    assert not verify(key.public_key, sig[:63], b"msg\x00with zero")


def _sui_config(tmp_path, keys, active):
    store = tmp_path / "sui.keystore"
    entries = ["AQ" + "A" * 42] + [to_sui_keystore_entry(k) for k in keys]  # + a secp256k1 one
    store.write_text(json.dumps(entries))
    (tmp_path / "client.yaml").write_text(
        f'---\nkeystore:\n  File: "{store}"\nenvs: []\nactive_env: testnet\n'
        f"active_address: {active}\n"
    )
    return tmp_path


def test_reads_sui_cli_config_and_keystore(tmp_path):
    a, b = KeyPair.generate(), KeyPair.generate()
    config = _sui_config(tmp_path, [a, b], b.address)
    assert [k.address for k in load_sui_keystore(config / "sui.keystore")] == [a.address, b.address]
    assert sui_active_key(config).address == b.address


def test_sui_config_env_var_and_missing_active_key(tmp_path, monkeypatch):
    a = KeyPair.generate()
    config = _sui_config(tmp_path, [a], "0x" + "ab" * 32)
    monkeypatch.setenv("SUI_CONFIG_DIR", str(config))
    with pytest.raises(KeyError_, match="no Ed25519 key"):
        sui_active_key()
    with pytest.raises(KeyError_, match="no sui client config"):
        sui_active_key(tmp_path / "nowhere")
