"""Whose reputation an offer earns: the registered owner, never what a node says it is.

A node's status names a provider address, and any node can name any address. Reputation
is keyed on what the node cannot fake: the owner of the ledger registry entry whose
endpoint (and, over HTTPS, pinned certificate fingerprint) is the URL the renter reached.
A URL with no such entry (configured by hand) keeps its own reputation, under its URL
(with its pin): it can neither borrow a registered provider's record nor lend its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ...common.tls import TLSError, pin_of, split_pin
from ...ledger import ProviderEntry

log = logging.getLogger("walnut.reputation")


def registry_entries(ledger) -> list[ProviderEntry]:
    try:
        return list(ledger.list_providers())
    except Exception as exc:  # no registry: every provider is keyed by its URL
        log.debug("provider registry unavailable: %s", exc)
        return []


def _matches(entry: ProviderEntry, base: str, pin: str | None) -> bool:
    if entry.endpoint.rstrip("/") != base:
        return False
    return not base.startswith("https:") or (
        pin is not None and pin_of(entry.tls_fingerprint) == pin)


class Identities:
    """Maps a provider URL to its reputation key: the registered owner, or the URL."""

    def __init__(self, entries: Iterable[ProviderEntry]) -> None:
        self.entries = list(entries)

    def owner(self, url: str, reported: str | None = None) -> str | None:
        """The registered owner of this endpoint; when several entries claim it, the one
        the node itself names (it cannot name another's entry at its own endpoint)."""
        try:
            base, pin = split_pin(url)
        except TLSError:
            return None
        owners = {e.owner for e in self.entries if _matches(e, base, pin)}
        if len(owners) == 1:
            return owners.pop()
        return reported if reported in owners else None

    def key(self, url: str, reported: str | None = None) -> str:
        return self.owner(url, reported) or url.rstrip("/")


def identities(manager) -> Identities:
    return Identities(registry_entries(manager.ledger))
