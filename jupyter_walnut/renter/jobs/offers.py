"""Choosing an offer: the `--offer` syntax shared by the magics, the CLI and jobs.

    --offer 2                  row 2 of the last `providers` listing
    --offer cpu-small          the cheapest healthy offer of that shape
    --offer cpu-small@URL      that shape on that provider
    --offer URL                the cheapest shape of that provider
"""

from __future__ import annotations

from collections.abc import Iterable

from ...common.errors import BadRequest


class OfferError(BadRequest):
    """No offer matches (400); the message says which filter left nothing."""


def usable(row: dict) -> bool:
    return bool(row.get("healthy") and row.get("available"))


def filter_offers(offers: list[dict], *, shape: str | None = None, gpus: int | None = None,
                  max_price: int | None = None, provider: str | None = None,
                  available_only: bool = False) -> list[dict]:
    rows = []
    for o in offers:
        if not o.get("healthy"):
            if not available_only and provider is None and shape is None:
                rows.append(o)
            continue
        if shape and o["shape"] != shape:
            continue
        if gpus is not None and o["gpus"] < gpus:
            continue
        if max_price is not None and o["price_mist_per_second"] > max_price:
            continue
        if provider and o["provider_url"] != provider.rstrip("/"):
            continue
        if available_only and not o["available"]:
            continue
        rows.append(o)
    return rows


def choose_offer(offers: list[dict], spec: str | None = None, *,
                 exclude_providers: Iterable[str] = (), listed: list[dict] | None = None
                 ) -> dict:
    """The offer `spec` names (see the module doc), cheapest first, then lowest latency."""
    excluded = {u.rstrip("/") for u in exclude_providers}
    spec = (spec or "").strip()
    if spec.isdigit():
        rows = listed if listed is not None else offers
        index = int(spec)
        if not 0 <= index < len(rows):
            raise OfferError(f"no offer #{index}; list them with `providers`")
        row = rows[index]
        if not usable(row):
            raise OfferError(f"offer #{index} is not available now")
        return row
    shape, _, url = spec.partition("@")
    if "://" in shape:
        shape, url = "", spec
    candidates = [o for o in offers if usable(o) and o["provider_url"] not in excluded
                  and (not shape or o["shape"] == shape)
                  and (not url or o["provider_url"] == url.rstrip("/"))]
    if not candidates:
        what = spec or "any offer"
        if excluded:
            what += f" (excluding {len(excluded)} provider(s) that failed)"
        raise OfferError(f"no healthy, available offer matches {what}")
    return min(candidates, key=lambda o: (o["price_mist_per_second"],
                                          o.get("latency_ms") or 0.0))
