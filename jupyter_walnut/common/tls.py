"""TLS for provider nodes, with trust rooted in the ledger instead of a CA.

A provider without a CA certificate generates a self-signed one; its SHA-256 fingerprint is
published in the provider's registry entry. Renters pin it: the only certificate a
connection to that provider accepts is the one with the pinned fingerprint.
A pin travels with a provider URL as a fragment: `https://host:8765#sha256=<64 hex>`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import socket
import ssl
import threading
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .errors import BadGateway

_PIN = re.compile(r"^sha256=([0-9a-f]{64})$")


class TLSError(BadGateway):
    """A TLS problem a user can act on (a peer's certificate, mostly: 502); the message
    says which."""


def generate_self_signed(common_name: str, cert_path: Path, key_path: Path,
                         hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                         days: int = 3650) -> str:
    """Write a self-signed certificate and its key (owner-only); returns the fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    alt_names: list[x509.GeneralName] = []
    for host in {*hosts, socket.gethostname()}:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert_path.read_bytes())


def fingerprint(cert: bytes) -> str:
    """SHA-256 over the DER form, as 64 lower-case hex characters (PEM or DER input)."""
    der = ssl.PEM_cert_to_DER_cert(cert.decode()) if cert.lstrip().startswith(b"-----") \
        else cert
    return hashlib.sha256(der).hexdigest()


def pin_of(fingerprint: str | None) -> str:
    """A registered fingerprint as a pin: lower-case hex, no `0x`, no colons ("" for none)."""
    return (fingerprint or "").lower().removeprefix("0x").replace(":", "")


def pinned_url(url: str, fingerprint: str | None) -> str:
    """`url` carrying its certificate pin, as `split_pin` reads it back; an HTTP URL, or one
    without a fingerprint, as it is."""
    base, pin = url.rstrip("/"), pin_of(fingerprint)
    return f"{base}#sha256={pin}" if base.startswith("https://") and pin else base


def split_pin(url: str) -> tuple[str, str | None]:
    """(`url` without its fragment, the pinned fingerprint or None)."""
    base, _, fragment = url.partition("#")
    if not fragment:
        return base.rstrip("/"), None
    match = _PIN.match(fragment.lower())
    if not match:
        raise TLSError(f"bad pin in {url!r}: expected #sha256=<64 hex characters>")
    return base.rstrip("/"), match.group(1)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_path), str(key_path))
    return context


_contexts: dict[tuple[str, int, str], ssl.SSLContext] = {}
_lock = threading.Lock()


def pinned_context(url: str, pin: str | None) -> ssl.SSLContext | None:
    """The client TLS context for a provider URL: None for plain HTTP on loopback.

    Blocking (it reads the server's certificate once): call it in a thread.
    """
    parts = urlsplit(url)
    host, scheme = parts.hostname or "", parts.scheme
    if scheme == "http":
        if not is_loopback(host):
            raise TLSError(f"refusing plain HTTP to {host}: providers off this machine must "
                           "use https")
        return None
    if scheme != "https":
        raise TLSError(f"unsupported provider URL scheme {scheme!r}")
    if pin is None:
        raise TLSError(f"no pinned certificate for {url}: register the provider on the "
                       "ledger or give its URL as https://host:port#sha256=<fingerprint>")
    port = parts.port or 443
    key = (host, port, pin)
    with _lock:
        if key in _contexts:
            return _contexts[key]
    try:
        pem = ssl.get_server_certificate((host, port), timeout=10)
    except OSError as exc:
        raise TLSError(f"provider {host}:{port} unreachable: {exc.strerror or exc}") from exc
    got = fingerprint(pem.encode())
    if got != pin:
        raise TLSError(f"provider {host}:{port} presented certificate {got[:16]}..., not the "
                       f"pinned {pin[:16]}...: refusing to connect")
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False  # the pin, not a name, identifies the provider
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a CA-issued leaf pins too
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _lock:
        _contexts[key] = context
    return context
