"""Trust rooted in the ledger: renters find providers in the registry and pin the TLS
certificate fingerprint registered there."""

from __future__ import annotations

import pytest

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.tls import generate_self_signed, pinned_url, server_context, split_pin
from jupyter_walnut.renter.manager import RenterManager

pytestmark = pytest.mark.asyncio


def tls_context(tmp_path, name):
    cert, key = tmp_path / name / "cert.pem", tmp_path / name / "key.pem"
    fp = generate_self_signed(name, cert, key)
    context = server_context(cert, key)
    context.walnut_fingerprint = fp
    return context, fp


async def test_renter_discovers_registered_providers_and_pins_them(provider_factory, ledger,
                                                                   tmp_path):
    context, fp = tls_context(tmp_path, "honest")
    node = await provider_factory(ssl_context=context)
    ledger.register_provider(node.identity, endpoint=node.url, tls_fingerprint=fp,
                             specs="{}", price_per_second_mist=1000)
    renter = RenterManager(tmp_path / "renter", [], key=KeyPair.generate(), ledger=ledger)
    offers = await renter.offers()
    assert {o["node"] for o in offers if o["healthy"]} == {"test-node"}
    assert all(o["provider_url"] == f"{node.url}#sha256={fp}" for o in offers)

    # an impostor at a registered endpoint (another certificate) is refused, not trusted
    impostor_context, _ = tls_context(tmp_path, "impostor")
    impostor = await provider_factory(ssl_context=impostor_context)
    ledger.register_provider(KeyPair.generate(), endpoint=impostor.url, tls_fingerprint=fp,
                             specs="{}", price_per_second_mist=1)
    offers = await renter.offers()
    bad = [o for o in offers if o["provider_url"].startswith(impostor.url)]
    assert len(bad) == 1 and not bad[0]["healthy"]
    assert "not the pinned" in bad[0]["error"]


def test_a_registered_fingerprint_in_any_spelling_becomes_one_pin():
    pin = "ab" * 32
    for spelled in (pin, pin.upper(), "0x" + pin, ":".join(["AB"] * 32)):
        url = pinned_url("https://node.example:8765/", spelled)
        assert url == f"https://node.example:8765#sha256={pin}"
        assert split_pin(url) == ("https://node.example:8765", pin)
    assert pinned_url("http://127.0.0.1:8765", pin) == "http://127.0.0.1:8765"  # no TLS
    assert pinned_url("https://node.example:8765", None) == "https://node.example:8765"
