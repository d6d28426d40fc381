"""What a session container may reach: iptables rules on the session's own bridge.

Every session has its own Docker bridge (`wn<hash>`). Packets a container sends enter the host
through that bridge, so two chains per session, hooked on `-i <bridge>`, decide:

- to the host itself (INPUT, IPv4 and IPv6): nothing new, whatever address or port it listens
  on (0.0.0.0 included); only replies to connections the host opened (the provider's proxy
  reaching the gateway) pass, and the one exception a session may be given: its own relay to
  the node's package cache, at exactly its bridge's gateway address and the cache's port
  (`host_services`; another session's bridge has no rule for it).
- forwarded (DOCKER-USER for IPv4, FORWARD for IPv6): `internet` drops the private, shared,
  loopback, link-local (cloud metadata 169.254.169.254), multicast and reserved ranges and lets
  the rest through, plus DNS to the host's own resolvers so names resolve; `offline` drops all.
  Session networks have no IPv6, so forwarded IPv6 is always dropped.

The rules are installed before the container starts and removed with its network.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import subprocess
from pathlib import Path

from .base import RuntimeError_

BLOCKED_V4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)
RESOLV_CONFS = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
_NAMESERVER = re.compile(r"^\s*nameserver\s+(\S+)", re.MULTILINE)


def bridge_name(session_id: str) -> str:
    """The session network's Linux bridge: at most 15 characters (IFNAMSIZ)."""
    return "wn" + hashlib.sha256(session_id.encode()).hexdigest()[:13]


def _chain(bridge: str, kind: str) -> str:
    return f"WALNUT-{bridge}-{kind}"  # <= 28 characters, an iptables chain name's limit


def host_resolvers(paths: tuple[str, ...] = RESOLV_CONFS) -> list[str]:
    """IPv4 nameservers the engine forwards session DNS to (loopback ones are never used)."""
    found: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            for value in _NAMESERVER.findall(Path(path).read_text()):
                with contextlib.suppress(ValueError):
                    address = ipaddress.ip_address(value)
                    if address.version == 4 and not address.is_loopback and value not in found:
                        found.append(value)
    return found


def _iptables(binary: str, *args: str, check: bool = True) -> bool:
    try:
        done = subprocess.run([binary, "-w", *args], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if not check:
            return False
        raise RuntimeError_(f"could not install the session's network rules ({binary}: "
                            f"{exc}); the egress policy needs iptables and root") from exc
    if done.returncode != 0 and check:
        detail = done.stderr.strip().splitlines()
        raise RuntimeError_(f"could not install the session's network rules ({binary} "
                            f"{' '.join(args)}: {detail[-1] if detail else done.returncode})")
    return done.returncode == 0


def _ipv6_on_host() -> bool:
    return os.path.exists("/proc/net/if_inet6")


def forward_rules(policy: str, resolvers: list[str]) -> list[list[str]]:
    """The IPv4 forwarding chain's rules for `policy`, in order."""
    if policy == "offline":
        return [["-j", "DROP"]]
    rules = [["-d", ns, "-p", proto, "--dport", "53", "-j", "RETURN"]
             for ns in resolvers for proto in ("udp", "tcp")]
    return rules + [["-d", net, "-j", "DROP"] for net in BLOCKED_V4]


def install(session_id: str, policy: str,
            host_services: tuple[tuple[str, int], ...] = ()) -> None:
    """The session's chains and their hooks; replaces any leftover of the same session.
    `host_services`: (IPv4 address, TCP port) on the host this bridge may open connections
    to (the session's package cache relay), whatever the egress policy."""
    remove(session_id)
    bridge = bridge_name(session_id)
    established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]
    to_host = [established, ["-j", "DROP"]]
    services = [["-d", f"{address}/32", "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"]
                for address, port in host_services]
    tables = [("iptables", "IN", "INPUT", [established, *services, ["-j", "DROP"]]),
              ("iptables", "FWD", "DOCKER-USER", forward_rules(policy, host_resolvers()))]
    if _ipv6_on_host():
        tables += [("ip6tables", "IN", "INPUT", to_host), ("ip6tables", "FWD", "FORWARD",
                                                           [["-j", "DROP"]])]
    try:
        for binary, kind, hook, rules in tables:
            chain = _chain(bridge, kind)
            _iptables(binary, "-N", chain)
            for rule in rules:
                _iptables(binary, "-A", chain, *rule)
            _iptables(binary, "-I", hook, "1", "-i", bridge, "-j", chain)
    except BaseException:
        remove(session_id)
        raise


def remove(session_id: str) -> None:
    """Unhook and delete the session's chains; idempotent."""
    bridge = bridge_name(session_id)
    for binary, kind, hook in (("iptables", "IN", "INPUT"), ("iptables", "FWD", "DOCKER-USER"),
                               ("ip6tables", "IN", "INPUT"), ("ip6tables", "FWD", "FORWARD")):
        chain = _chain(bridge, kind)
        for _ in range(16):  # every hook a crashed start may have left
            if not _iptables(binary, "-D", hook, "-i", bridge, "-j", chain, check=False):
                break
        if _iptables(binary, "-F", chain, check=False):
            _iptables(binary, "-X", chain, check=False)


def installed(session_id: str, binary: str = "iptables") -> dict[str, list[str]]:
    """The session's chains as `iptables -S` lists them (empty when none): for checks."""
    bridge = bridge_name(session_id)
    out = {}
    for kind in ("IN", "FWD"):
        chain = _chain(bridge, kind)
        done = subprocess.run([binary, "-w", "-S", chain], capture_output=True, text=True,
                              timeout=60, check=False)
        if done.returncode == 0:
            out[kind] = done.stdout.splitlines()
    return out
