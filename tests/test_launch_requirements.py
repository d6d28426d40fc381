"""Requirements at launch, provider side (issue #15, contract C4): POST /sessions
`requirements` are checked (400 naming the line, nothing created), installed in the session's
own environment before it turns `running` with pip's progress in its status, a bad one fails
the launch with pip's own message and a full refund, and a relaunch with the same
requirements restores the renter's prepared environment without running pip.

On the default stack (Docker + TLS); WALNUT_TEST_RUNTIME=process runs the cheaper leg.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import FUNDS, open_channel, provider_config
from kernel_ws import KernelWS
from package_index import PackageIndex, host_wheels
from stack import StackNode, stack_runtime

from jupyter_walnut.common.keys import KeyPair
from jupyter_walnut.common.requirements import parse_requirements
from jupyter_walnut.ledger.base import normalize_channel_id
from jupyter_walnut.provider.environment_prep import PipProgress, PreparedEnvironments
from jupyter_walnut.renter.provider_client import ProviderAPIError

PRICE = 1000


pytestmark = [pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def index():
    """The node's package cache's upstream: wheels downloaded on the host, served locally."""
    upstream = PackageIndex(host_wheels())
    try:
        yield upstream
    finally:
        upstream.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory, index):
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp("requirements")
    ledger = LocalLedger(tmp / "ledger.sqlite")
    stack = StackNode(tmp / "provider", ledger, config=provider_config(
        provider={"name": "req-node", "runtime": stack_runtime()},
        settlement={"settle_after_s": 1, "min_challenge_period_s": 60},
        packages={"upstream_url": index.url}))
    try:
        cache = stack.node.package_cache
        assert stack.run(cache.wait_ready(), timeout=200), cache.reason
        yield stack
    finally:
        stack.stop()
        ledger.close()


class Renter:
    """A funded renter of the node, its channel and its session, driven from the node's
    loop."""

    def __init__(self, node: StackNode, key: KeyPair | None = None) -> None:
        self.node = node
        self.key = key or KeyPair.generate()
        self.client = node.client(self.key)

    def launch(self, requirements: str, image: str = "python") -> dict:
        channel = open_channel(self.node.ledger, self.key, self.node, price=PRICE)
        return self.node.run(self.client.create_session(
            image=image, channel_id=channel, requirements=requirements))

    def status(self, session_id: str) -> dict:
        return self.node.run(self.client.get_session(session_id))

    def follow(self, session_id: str, timeout: float = 300) -> tuple[dict, list[dict]]:
        """Poll the session's status until it is no longer starting: (last status, every
        distinct environment seen on the way)."""
        seen: list[dict] = []
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(session_id)
            if not seen or seen[-1] != status["environment"]:
                seen.append(status["environment"])
            if status["status"] != "starting":
                return status, seen
            assert time.monotonic() < deadline, f"still starting: {status}"
            time.sleep(0.05)  # polling the provider's API, bounded by the deadline

    def execute(self, created: dict, code: str):
        async def run():
            kernel = await self.client.gateway(created["id"], created["access_token"], "POST",
                                               "api/kernels", {"name": "python3"})
            ws = KernelWS(await self.client.kernel_websocket(
                created["id"], created["access_token"], kernel["id"]))
            try:
                return await ws.execute(code, timeout=90)
            finally:
                ws.conn.close()

        return self.node.run(run(), timeout=150)

    def stop(self, session_id: str) -> dict:
        return self.node.run(self.client.stop_session(session_id))


def wait_settled(node: StackNode, session_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while node.store.get(session_id).settlement.value != "settled":
        assert time.monotonic() < deadline, node.store.get(session_id)
        node.run(node.sessions.settle_once())
        time.sleep(0.1)  # the settle pass is driven here; bounded by the deadline
    return node.store.get(session_id)


# --- checked before anything is created ----------------------------------------------------

@pytest.mark.parametrize("line", [
    "-r other.txt", "-c constraints.txt", "-e .", "-f https://example.invalid/wheels",
    "--index-url https://example.invalid/simple", "--extra-index-url http://x.invalid/",
    "--find-links /tmp", "--trusted-host example.invalid", "./local-package",
    "/home/walnut/work/pkg", "~/pkg", "file:///etc/passwd", "https://example.invalid/x.whl",
    "pkg @ https://example.invalid/pkg.tar.gz", "local-1.0-py3-none-any.whl", "numpy==",
])
def test_a_requirement_pip_would_read_as_an_option_path_or_url_is_refused(node, line):
    renter = Renter(node)
    before = len(node.store.list())
    provider_balance = node.ledger.balance(node.identity.address)
    channel = open_channel(node.ledger, renter.key, node, price=PRICE)
    with pytest.raises(ProviderAPIError) as err:
        node.run(renter.client.create_session(
            image="python", channel_id=channel,
            requirements=f"# my project\nnumpy\n{line}\n"))
    assert err.value.status == 400
    assert "requirements line 3" in err.value.message and line[:20] in err.value.message
    assert len(node.store.list()) == before  # nothing created
    assert not node.store.channel_reserved(normalize_channel_id(channel))  # untouched
    assert node.ledger.balance(node.identity.address) == provider_balance
    assert node.ledger.balance(renter.key.address) == FUNDS - 600_000  # only its own lock


def test_requirements_too_large_or_not_text_are_refused(node):
    renter = Renter(node)
    for requirements, words in (("x" * (64 * 1024 + 1), "larger than 64 KiB"),
                                (["numpy"], "must be a string")):
        with pytest.raises(ProviderAPIError) as err:
            node.run(renter.client.create_session(image="python", requirements=requirements))
        assert err.value.status == 400 and words in err.value.message


def test_the_same_requirements_written_differently_have_one_hash():
    a = parse_requirements("NumPy>=1.0,<3  # arrays\n\nrequests[Socks]\n")
    b = parse_requirements("requests[socks]\n# comment\nnumpy<3,>=1.0\nnumpy <3, >=1.0\n")
    assert a.lines == b.lines == ("numpy<3,>=1.0", "requests[socks]")
    assert a.hash == b.hash != parse_requirements("numpy\n").hash


def test_pips_output_reads_as_progress():
    progress = PipProgress("h")
    states = []
    for line in ("Looking in indexes: http://cache/simple/", "Collecting tabulate==0.9.0",
                 "  Downloading tabulate-0.9.0-py3-none-any.whl (35 kB)", "Collecting toolz",
                 "  Using cached toolz-1.0.0-py3-none-any.whl (56 kB)",
                 "Installing collected packages: toolz, tabulate",
                 "Successfully installed tabulate-0.9.0 toolz-1.0.0"):
        progress.feed(line)
        env = progress.env
        states.append((env["state"], env["done"], env["total"]))
    assert states == [("resolving", 0, None), ("resolving", 1, None), ("downloading", 1, 1),
                      ("resolving", 2, None), ("downloading", 2, 2), ("installing", 0, 2),
                      ("installing", 2, 2)]


def test_prepared_environments_stay_within_their_bound_least_recently_used_first(tmp_path):
    cache = PreparedEnvironments(tmp_path / "envs", max_bytes=2500)
    keys = [cache.key("0xrenter", "image", h) for h in ("a", "b", "c")]
    assert len(set(keys)) == 3 and cache.key("0xother", "image", "a") != keys[0]
    for age, key in enumerate(keys[:2]):
        written = cache.new_file(key)
        written.write_bytes(b"x" * 1000)
        assert cache.put(key, written)
        os.utime(tmp_path / "envs" / f"{key}.tar", (1000 + age, 1000 + age))  # a made up past
    assert cache.get(keys[0]) is not None  # used again: now the most recent
    written = cache.new_file(keys[2])
    written.write_bytes(b"x" * 1000)
    assert cache.put(keys[2], written)
    assert cache.get(keys[1]) is None  # the least recently used went
    assert cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    assert cache.total_bytes() <= 2500
    too_big = cache.new_file("big")
    too_big.write_bytes(b"x" * 3000)
    assert not cache.put("big", too_big) and not too_big.exists()


# --- in a real session -------------------------------------------------------------------

def test_a_bad_requirement_fails_the_launch_with_pips_message_and_refunds_in_full(node):
    renter = Renter(node)
    created = renter.launch("nonexistent-package-xyz==1\n")
    assert created["status"] == "starting"
    assert created["environment"]["state"] != "none"
    status, _ = renter.follow(created["id"])
    assert status["status"] == "failed", status
    assert status["reason"].startswith("installing requirements failed: ")
    assert "No matching distribution found for nonexistent-package-xyz==1" in status["reason"]
    env = status["environment"]
    assert env["state"] == "failed"
    assert "No matching distribution" in env["error"]
    assert env["requirements_hash"] == parse_requirements("nonexistent-package-xyz==1").hash
    assert status["cost_mist"] == 0  # never running: nothing metered
    rec = wait_settled(node, created["id"])
    assert rec.claimed_mist == 0
    assert node.ledger.balance(renter.key.address) == FUNDS  # the deposit is back, all of it


def test_requirements_the_image_has_are_ready_before_the_kernel_and_the_relaunch_is_cached(
        node):
    renter = Renter(node)
    created = renter.launch("numpy\n")
    status, seen = renter.follow(created["id"])
    assert status["status"] == "running", (status["reason"], status["environment"])
    assert status["environment"]["state"] == "ready"
    assert "resolving" in [e["state"] for e in seen]
    result = renter.execute(created, "import numpy; print(numpy.__name__)")
    assert result.status == "ok" and result.stdout.strip() == "numpy"
    renter.stop(created["id"])
    # the same renter, the same requirements written differently: the prepared environment
    again = renter.launch("# again\nNumPy\n")
    status, seen = renter.follow(again["id"])
    assert status["status"] == "running", (status["reason"], status["environment"])
    assert status["environment"]["state"] == "cached"
    assert not {"downloading", "installing"} & {e["state"] for e in seen}  # no pip run
    result = renter.execute(again, "import numpy; print(numpy.__name__)")
    assert result.status == "ok", result.error
    renter.stop(again["id"])
    # another renter with the same requirements gets no other renter's environment
    other = Renter(node)
    third = other.launch("numpy\n")
    status, _ = other.follow(third["id"])
    assert status["environment"]["state"] == "ready"
    other.stop(third["id"])


def test_requirements_install_from_the_nodes_cache_with_progress_and_a_relaunch_runs_no_pip(
        node, index):
    renter = Renter(node)
    created = renter.launch("tabulate\ntoolz  # small, pure Python, in no image\n")
    status, seen = renter.follow(created["id"])
    assert status["status"] == "running", (status["reason"], status["environment"])
    env = status["environment"]
    # pip's "Installing collected packages: tabulate, toolz", read as 2 of 2
    assert (env["state"], env["done"], env["total"]) == ("ready", 2, 2), env
    states = [e["state"] for e in seen]
    assert states[0] == "resolving" and states[-1] == "ready", states
    assert "downloading" in states, states  # from the cache, which fetches from upstream
    # pip resolves and downloads package by package, then installs them all
    done_fetching = next(i for i, st in enumerate(states) if st in ("installing", "ready"))
    assert not {"resolving", "downloading"} & set(states[done_fetching:]), states
    assert index.file_fetches("tabulate") == 1 and index.file_fetches("toolz") == 1
    result = renter.execute(created, "import tabulate, toolz; print(tabulate.__file__)")
    assert result.status == "ok", result.error
    assert "/.walnut/env/" in result.stdout  # the session's own env, not the image's
    renter.stop(created["id"])
    served = node.node.package_cache.stats()["file_requests"]
    # the relaunch: the prepared environment comes back, pip asks the cache for nothing
    again = renter.launch("toolz\ntabulate\n")
    status, seen = renter.follow(again["id"])
    assert status["status"] == "running", (status["reason"], status["environment"])
    assert status["environment"]["state"] == "cached"
    assert not {"downloading", "installing"} & {e["state"] for e in seen}
    assert node.node.package_cache.stats()["file_requests"] == served
    assert index.file_fetches("tabulate") == 1
    result = renter.execute(again, "import tabulate; print(tabulate.tabulate([[1, 2]]))")
    assert result.status == "ok" and "1  2" in result.stdout, (result.error, result.stdout)
    renter.stop(again["id"])


def test_a_session_without_requirements_says_none(node):
    renter = Renter(node)
    channel = open_channel(node.ledger, renter.key, node, price=PRICE)
    created = node.run(renter.client.create_session(image="python", channel_id=channel))
    assert created["environment"]["state"] == "none"
    assert node.run(renter.client.status())["settlement"]["bills_install"] is False
    renter.stop(created["id"])


def test_a_provider_restart_while_requirements_install_fails_the_session_and_refunds(
        tmp_path, index):
    from jupyter_walnut.ledger import LocalLedger

    ledger = LocalLedger(tmp_path / "ledger.sqlite")
    config = provider_config(
        provider={"name": "req-restart", "runtime": stack_runtime()},
        settlement={"settle_after_s": 1, "min_challenge_period_s": 60},
        packages={"upstream_url": index.url})
    first = StackNode(tmp_path / "provider", ledger, config=config)
    renter = Renter(first)
    try:
        created = renter.launch("tabulate\n")
        assert created["environment"]["state"] == "resolving"  # before the install ends
        first.stop(stop_sessions=False)  # the provider goes down mid-launch
        second = StackNode(tmp_path / "provider", ledger, config=config,
                           identity=first.identity)
    except BaseException:
        first.stop()
        ledger.close()
        raise
    try:
        renter = Renter(second, renter.key)
        status = renter.status(created["id"])
        assert status["status"] == "failed"
        assert status["environment"]["state"] == "failed"
        assert status["environment"]["error"]
        assert status["cost_mist"] == 0
        assert wait_settled(second, created["id"]).claimed_mist == 0
        assert ledger.balance(renter.key.address) == FUNDS
    finally:
        second.stop()
        ledger.close()


@pytest.mark.parametrize("bills_install", [True, False])
def test_install_time_is_metered_only_where_the_offer_says_so(tmp_path, bills_install):
    from jupyter_walnut.ledger import LocalLedger

    ledger = LocalLedger(tmp_path / "ledger.sqlite")
    stack = StackNode(tmp_path / "provider", ledger, config=provider_config(
        provider={"name": "req-billing", "runtime": stack_runtime()},
        settlement={"settle_after_s": 1, "min_challenge_period_s": 60,
                    "bills_install": bills_install},
        packages={"cache": "off"}))
    try:
        renter = Renter(stack)
        assert stack.run(renter.client.status())["settlement"]["bills_install"] is bills_install
        created = renter.launch("numpy\n")  # in the image: pip runs, resolves, installs nothing
        status, _ = renter.follow(created["id"])
        assert status["status"] == "running", (status["reason"], status["environment"])
        renter.stop(created["id"])
        rec = stack.store.get(created["id"])
        ran_ms = (rec.ended_at - rec.started_at) * 1000  # wall time from `running` to the end
        if bills_install:  # metered from the install's start: pip's run, at least 0.1 s
            assert rec.running_ms > ran_ms + 100, (rec.running_ms, ran_ms)
        else:
            assert rec.running_ms <= ran_ms + 50, (rec.running_ms, ran_ms)  # clocks' rounding
    finally:
        stack.stop()
        ledger.close()
