"""Reliability from evidence: a scripted history with real providers moves the score as a
renter would expect; the formula and the bounded probe schedule on figures."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import FUNDS, on_settled, provider_config

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.renter.manager import RenterError, RenterManager
from jupyter_walnut.renter.reputation import health_log
from jupyter_walnut.renter.reputation.health import HealthLog
from jupyter_walnut.renter.reputation.score import Evidence, reliability

pytestmark = pytest.mark.timeout(240)

HOST_CPUS = len(os.sched_getaffinity(0))
PRICE = 1000
# the final voucher, not a timeout, settles: the provider waits this long for it
SETTLE = {"settle_after_s": 30}


def shape(name: str, cpus: float) -> dict:
    return {"name": name, "gpus": 0, "cpus": cpus, "memory_mb": 1024,
            "price_per_second_mist": PRICE}


def row_of(offers: list[dict], node) -> dict:
    return next(o for o in offers if o["provider_url"] == node.url)


@pytest.mark.asyncio
async def test_scores_follow_a_scripted_history(provider_factory, ledger, tmp_path,
                                                monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    honest = await provider_factory(provider_config(settlement=SETTLE,
                                                    shapes=[shape("fair", 1)]))
    liar = await provider_factory(provider_config(settlement=SETTLE,
                                                  shapes=[shape("big", HOST_CPUS + 6)]))
    settled = on_settled(honest)
    key = KeyPair.generate()
    ledger.fund(key.address, FUNDS)
    manager = RenterManager(tmp_path / "renter", [honest.url, liar.url], key=key,
                            ledger=ledger)
    health_log(manager).min_gap_s = 0  # every offers() call is a sample in this test

    first = row_of(await manager.offers(), honest)
    assert first["reliability"] is None and first["verified"] is None  # no evidence yet
    assert (first["verified_gflops"], first["verified_checks"]) == (None, 0)
    assert first["uptime_pct"] == 100.0

    # 1. a session that runs and is stopped by the renter: completed, checked, settled
    s1 = await manager.launch(honest.url, "fair", budget_mist=300 * PRICE)
    await manager.stop(s1.id)
    assert await asyncio.wait_for(settled.get(), 30) == s1.id
    row = row_of(await manager.offers(), honest)
    e = row["evidence"]
    assert (e["completed"], e["ended_early"], e["verified_ok"]) == (1, 0, 1)
    assert e["settled_by_provider"] == 1 and e["claimed_mist"] > 0
    assert row["verified"] is True
    # the renter's own probe measured the session: the offer's verified GFLOP/s (issue #21)
    measured = manager.get(s1.id).extra["verification"]["measured"]["gflops"]
    assert measured > 0 and (row["verified_gflops"], row["verified_checks"]) == (measured, 1)
    good = row["reliability"]
    assert 60 < good < 100

    # 2. a second good session: more evidence, a higher score
    s2 = await manager.launch(honest.url, "fair", budget_mist=300 * PRICE)
    await manager.stop(s2.id)
    assert await asyncio.wait_for(settled.get(), 30) == s2.id
    better = row_of(await manager.offers(), honest)["reliability"]
    assert better > good

    # 3. the provider ends a session under the renter: the score drops
    s3 = await manager.launch(honest.url, "fair", budget_mist=300 * PRICE)
    await honest.sessions.stop(s3.id, reason="provider shut down")
    await manager.refresh()
    assert manager.get(s3.id).status == "stopped"
    row = row_of(await manager.offers(), honest)
    assert row["evidence"]["ended_early"] == 1
    assert row["reliability"] < better

    # 4. the liar: caught by the check, marked unverified, capped at 50
    with pytest.raises(RenterError):
        await manager.launch(liar.url, "big", budget_mist=300 * PRICE)
    offers = await manager.offers()
    liar_row = row_of(offers, liar)
    assert liar_row["verified"] is False
    assert liar_row["verified_gflops"] is None  # a failed check's figures never count
    assert liar_row["reliability"] <= 50 < row_of(offers, honest)["reliability"]
    ranked = sorted(offers, key=lambda o: -(o["reliability"] or 0))
    assert ranked[0]["provider_url"] == honest.url  # usable as a sort key

    # 5. the honest provider goes away: marked unreachable, its uptime falls
    before = row_of(offers, honest)
    await honest.stop(stop_sessions=True)
    gone = row_of(await manager.offers(), honest)
    assert gone["healthy"] is False and gone["last_seen"] is not None
    assert gone["uptime_pct"] < before["uptime_pct"]
    assert gone["reliability"] < before["reliability"]  # its evidence is still known


def test_no_evidence_is_no_score():
    assert reliability(Evidence()) is None
    assert reliability(Evidence(probes_ok=10)) is None  # reachable says nothing of sessions


@pytest.mark.parametrize("better, worse", [
    (Evidence(completed=10), Evidence(completed=1)),
    (Evidence(completed=5), Evidence(completed=5, ended_early=2)),
    (Evidence(completed=5, verified_ok=5), Evidence(completed=5, verified_ok=4,
                                                    verified_failed=1)),
    (Evidence(completed=1, probes_ok=100), Evidence(completed=1, probes_ok=80,
                                                    probes_failed=20)),
    (Evidence(settled_by_provider=5), Evidence(settled_by_provider=4, recovered_by_renter=1)),
])
def test_the_score_ranks_evidence_as_a_renter_would(better, worse):
    assert reliability(better) > reliability(worse)


def test_a_recent_failed_check_caps_the_score():
    e = Evidence(completed=50, verified_ok=49, verified_failed=1, probes_ok=500,
                 recent_verification_failed=True)
    assert reliability(e) == 50.0
    e.recent_verification_failed = False
    assert reliability(e) > 90


def test_probes_are_sampled_on_a_bounded_schedule(tmp_path):
    log = HealthLog(tmp_path / "renter.sqlite")
    assert log.record("http://p", True, latency_ms=3.0, version="0.1", at=1000.0)
    assert not log.record("http://p", False, at=1005.0)  # within MIN_GAP_S: dropped
    assert log.record("http://p", False, error="refused", at=1020.0)
    assert log.uptime("http://p", since=0) == (1, 1)
    assert log.last("http://p")["error"] == "refused"
    assert log.last_ok("http://p")["version"] == "0.1"
