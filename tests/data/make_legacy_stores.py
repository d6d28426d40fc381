"""Write the stores of the previous release (money in the JSON `extra` column) that
tests/test_money_columns.py opens with the current code.

Run with the previous release's package first on the path, e.g.

    mkdir -p /tmp/old && git archive d0cea72 jupyter_walnut | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/data/make_legacy_stores.py tests/data

It writes legacy_renter.sqlite, legacy_provider.sqlite and legacy_expect.json: what that
release's own code reported (each session's public view, the provider's earnings).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from jupyter_walnut.provider import analytics
from jupyter_walnut.provider.store import SessionRecord, SessionStore
from jupyter_walnut.renter.store import RenterSession, RenterStore

T0 = 1_790_000_000.0
CH = "0x" + "ab" * 32


def renter_rows() -> list[RenterSession]:
    base = dict(provider_url="https://p.example:8443", provider_address="0x" + "11" * 32,
                node="node-a", shape="cpu-small", image="python", gpus=0, cpus=2.0,
                memory_mb=2048, price_mist_per_second=1000, access_token="tok")
    return [
        RenterSession(id="s-0000000000000001", max_seconds=600, budget_mist=600_000,
                      status="running", created_at=T0, started_at=T0 + 2, running_seconds=40,
                      cost_mist=40_000, channel_id=CH[:-2] + "01",
                      extra={"deposit_mist": 900_000, "voucher_mist": 38_000,
                             "settlement": "open", "usage": {"cpu_pct": 12.5},
                             "verification": {"ok": True, "reasons": [], "warnings": []}},
                      **base),
        RenterSession(id="s-0000000000000002", max_seconds=60, budget_mist=60_000,
                      status="stopped", reason="stopped by you", created_at=T0 + 10,
                      started_at=T0 + 11, ended_at=T0 + 41, running_seconds=30,
                      cost_mist=30_000, channel_id=CH[:-2] + "02",
                      extra={"deposit_mist": 60_000, "voucher_mist": 30_000,
                             "settlement": "settled", "claimed_mist": 30_000,
                             "refunded_mist": 30_000}, **base),
        RenterSession(id="s-0000000000000003", max_seconds=60, budget_mist=60_000,
                      status="failed", reason="the provider has been unreachable",
                      created_at=T0 + 20, started_at=T0 + 21, ended_at=T0 + 50,
                      running_seconds=20, cost_mist=20_000, channel_id=CH[:-2] + "03",
                      extra={"deposit_mist": 60_000, "voucher_mist": 19_000,
                             "settlement": "closing", "claimed_mist": 0, "refunded_mist": 0,
                             "refund_at": T0 + 700.5, "settlement_error": "node busy",
                             "unreachable_since": T0 + 30}, **base),
        # a refused launch: its channel kept only so the deposit comes back
        RenterSession(id="x-abababababababab", max_seconds=0, budget_mist=0, status="failed",
                      reason="launch refused: no", created_at=T0 + 30, ended_at=T0 + 30,
                      channel_id=CH[:-2] + "04",
                      extra={"settlement": "open", "launch_failed": True}, **base),
        # written before deposits were recorded: no money keys at all
        RenterSession(id="s-0000000000000005", max_seconds=60, budget_mist=45_000,
                      status="stopped", created_at=T0 + 40, started_at=T0 + 41,
                      ended_at=T0 + 60, running_seconds=19, cost_mist=19_000, **base),
        RenterSession(id="s-0000000000000006", max_seconds=60, budget_mist=60_000,
                      status="stopped", created_at=T0 + 50, started_at=T0 + 51,
                      ended_at=T0 + 70, running_seconds=19, cost_mist=19_000,
                      channel_id=CH[:-2] + "06",
                      extra={"deposit_mist": 60_000, "voucher_mist": 19_000,
                             "settlement": "unknown", "settlement_error": "E_NODE: down"},
                      **base),
    ]


def provider_rows() -> list[SessionRecord]:
    base = dict(renter="0x" + "22" * 32, renter_public_key="33" * 32, shape="cpu-small",
                image="python", cpus=2.0, memory_mb=2048, price_mist_per_second=1000,
                runtime="process", gateway_token="g", access_token_hash="h")
    sig = "cd" * 64
    return [
        SessionRecord(id="s-00000000000000a1", gpus=[], max_seconds=600, status="running",
                      created_at=T0, started_at=T0 + 1, running_ms=40_500,
                      checkpoint_wall=T0 + 41, gateway_url="http://127.0.0.1:9",
                      runtime_ref="r1", channel_id=CH[:-2] + "a1",
                      extra={"deposit_mist": 900_000, "voucher_mist": 38_000,
                             "voucher_signature": sig, "settlement": "open",
                             "claimed_at": T0 + 20.25, "claimed_mist": 20_000}, **base),
        SessionRecord(id="s-00000000000000a2", gpus=[0, 1], max_seconds=60, status="stopped",
                      reason="stopped by renter", created_at=T0 + 10, started_at=T0 + 11,
                      ended_at=T0 + 41, running_ms=30_000, channel_id=CH[:-2] + "a2",
                      extra={"deposit_mist": 60_000, "voucher_mist": 30_000,
                             "voucher_signature": sig, "settlement": "settled",
                             "claimed_mist": 30_000, "paid_now_mist": 10_000,
                             "refunded_mist": 30_000}, **base),
        SessionRecord(id="s-00000000000000a3", gpus=[], max_seconds=60, status="stopped",
                      reason="the payment channel was closed", created_at=T0 + 20,
                      started_at=T0 + 21, ended_at=T0 + 40, running_ms=19_000,
                      channel_id=CH[:-2] + "a3",
                      extra={"deposit_mist": 60_000, "voucher_mist": 19_000,
                             "voucher_signature": sig, "settlement": "lost",
                             "claimed_mist": 5_000, "refunded_mist": 55_000,
                             "lost_mist": 14_000}, **base),
        # settled before claimed_mist was recorded: earnings counted its voucher
        SessionRecord(id="s-00000000000000a4", gpus=[], max_seconds=60, status="stopped",
                      created_at=T0 + 30, started_at=T0 + 31, ended_at=T0 + 50,
                      running_ms=19_000, channel_id=CH[:-2] + "a4",
                      extra={"deposit_mist": 60_000, "voucher_mist": 19_000,
                             "voucher_signature": sig, "settlement": "settled"}, **base),
        # a node that takes no payments
        SessionRecord(id="s-00000000000000a5", gpus=[], max_seconds=60, status="failed",
                      reason="gateway died", created_at=T0 + 40, started_at=T0 + 41,
                      ended_at=T0 + 45, running_ms=4_000,
                      extra={"deposit_mist": 0, "voucher_mist": 0, "settlement": "none"},
                      **base),
    ]


def main(out: Path) -> None:
    expect: dict = {"renter": {}, "provider": {}}
    renter_path, provider_path = out / "legacy_renter.sqlite", out / "legacy_provider.sqlite"
    for p in (renter_path, provider_path):
        p.unlink(missing_ok=True)
    renter = RenterStore(renter_path)
    for s in renter_rows():
        renter.insert(s)
    renter.save_kernel("k-local-1", "s-0000000000000001", "k-remote-1")
    expect["renter"] = {s.id: {**s.public(), "extra": s.extra} for s in renter.list()}
    renter.close()
    provider = SessionStore(provider_path)
    for rec in provider_rows():
        if rec.channel_id:
            provider.reserve_channel(rec.channel_id)
        provider.insert(rec)
    records = provider.list()
    expect["provider"] = {r.id: {**r.public(), "extra": r.extra} for r in records}
    expect["earnings"] = analytics.earnings(records)
    provider.close()
    for p in (renter_path, provider_path):  # one self-contained file each
        db = sqlite3.connect(p)
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("VACUUM")
        db.close()
    (out / "legacy_expect.json").write_text(json.dumps(expect, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
