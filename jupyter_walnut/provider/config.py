"""The provider's configuration file (`provider.toml`): prices, availability, images, endpoint.

Every value is validated on load; an invalid file is refused with the offending key named,
e.g. `shapes[1].price_mist_per_second: must be a non-negative integer (MIST)`.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runtimes.slurm import SlurmPlacement, SlurmSettings
from .settlement import SETTLEMENT_KEYS, SettlementPolicy

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
EGRESS = ("internet", "offline")  # what a session container may reach (see runtimes/egress.py)
DEFAULT_DISK_MB = 10240
_PACKAGE_ID = re.compile(r"^0x[0-9a-fA-F]{1,64}$")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key."""


@dataclass(frozen=True)
class Shape:
    """A resource shape the provider rents out, at an integer price in MIST per second."""

    name: str
    gpus: int
    cpus: float
    memory_mb: int
    price_mist_per_second: int
    disk_mb: int = 10240  # the session's workspace (Docker: a loop-mounted ext4 of this size)


@dataclass(frozen=True)
class Image:
    name: str  # what renters ask for
    reference: str  # docker image reference; "builtin" means the offline-built gateway image
    description: str = ""


@dataclass(frozen=True)
class Window:
    days: tuple[str, ...]
    start: str  # HH:MM, provider local time
    end: str  # HH:MM or 24:00

    def contains(self, when: dt.datetime) -> bool:
        if DAYS[when.weekday()] not in self.days:
            return False
        hhmm = when.strftime("%H:%M")
        return self.start <= hhmm < self.end


@dataclass(frozen=True)
class Availability:
    max_sessions: int = 4
    reserved_gpus: tuple[int, ...] = ()
    max_session_seconds: int = 24 * 3600
    schedule: tuple[Window, ...] = ()  # empty: always open

    def open_at(self, when: dt.datetime) -> bool:
        return not self.schedule or any(w.contains(when) for w in self.schedule)


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    endpoint: str
    region: str = "local"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8765
    runtime: str = "auto"  # auto | docker | process | slurm
    shapes: tuple[Shape, ...] = ()
    images: tuple[Image, ...] = ()
    availability: Availability = field(default_factory=Availability)
    max_body_bytes: int = 1024 * 1024
    signature_window_s: int = 60
    tls: str = "self-signed"  # self-signed | files | off (plain HTTP, loopback only)
    tls_cert: str = "tls/cert.pem"  # relative to the provider home
    tls_key: str = "tls/key.pem"
    ledger: str = "local"  # local | sui (the Sui ledger is configured in [ledger])
    ledger_path: str | None = None  # local ledger file; default: the shared Walnut ledger
    ledger_rpc_url: str = ""  # kind "sui": the Sui GraphQL service
    ledger_package_id: str = ""  # kind "sui": the published walnut Move package
    ledger_key: str = ""  # kind "sui": "" the identity key, "sui-cli", or a key file
    ledger_gas_budget: int = 50_000_000  # kind "sui": most MIST of gas per transaction
    egress: str = "internet"  # internet (no host, LAN or metadata addresses) | offline
    settlement: SettlementPolicy = field(default_factory=SettlementPolicy)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)  # [slurm], runtime "slurm"

    def shape(self, name: str) -> Shape | None:
        return next((s for s in self.shapes if s.name == name), None)

    def image(self, name: str) -> Image | None:
        return next((i for i in self.images if i.name == name), None)


# --- validation ---------------------------------------------------------------


def _int(data: dict, key: str, where: str, default: Any = ..., minimum: int = 0) -> int:
    if key not in data:
        if default is ...:
            raise ConfigError(f"{where}{key}: required")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}{key}: must be an integer >= {minimum}")
    return value


def _str(data: dict, key: str, where: str, default: Any = ..., pattern: re.Pattern | None = None,
         choices: tuple[str, ...] | None = None) -> str:
    if key not in data:
        if default is ...:
            raise ConfigError(f"{where}{key}: required")
        return default
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}{key}: must be a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise ConfigError(f"{where}{key}: {value!r} is not a valid name (a-z, 0-9, . _ -)")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}{key}: must be one of {', '.join(choices)}")
    return value


def _unknown(data: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ConfigError(f"{where}{extra[0]}: unknown key")


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key}: must be a table")
    return value


def _list(data: dict, key: str, where: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{where}{key}: must be a list")
    return value


def _shape(data: Any, where: str) -> Shape:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table")
    _unknown(data, {"name", "gpus", "cpus", "memory_mb", "price_mist_per_second", "disk_mb"},
             where + ".")
    w = where + "."
    cpus = data.get("cpus")
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 < cpus <= 1024:
        raise ConfigError(f"{w}cpus: must be a number of cores > 0")
    price = data.get("price_mist_per_second")
    if isinstance(price, float):
        raise ConfigError(f"{w}price_mist_per_second: must be an integer (MIST), not a float")
    return Shape(
        name=_str(data, "name", w, pattern=_NAME),
        gpus=_int(data, "gpus", w, default=0),
        cpus=float(cpus),
        memory_mb=_int(data, "memory_mb", w, minimum=64),
        price_mist_per_second=_int(data, "price_mist_per_second", w),
        disk_mb=_int(data, "disk_mb", w, default=DEFAULT_DISK_MB, minimum=64),
    )


def _window(data: Any, where: str) -> Window:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table")
    _unknown(data, {"days", "start", "end"}, where + ".")
    days = data.get("days", list(DAYS))
    if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
        raise ConfigError(f"{where}.days: must be a list of {', '.join(DAYS)}")
    start = _str(data, "start", where + ".", default="00:00")
    end = _str(data, "end", where + ".", default="24:00")
    for key, value in (("start", start), ("end", end)):
        if not _HHMM.match(value):
            raise ConfigError(f"{where}.{key}: must be HH:MM")
    if start >= end:
        raise ConfigError(f"{where}.end: must be after start")
    return Window(tuple(days), start, end)


_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SLURM_PLACEMENT = ("partition", "account", "qos")


def _slurm_name(data: dict, key: str, where: str) -> str:
    value = _str(data, key, where, default="")
    if value and not _SLURM_NAME.match(value):
        raise ConfigError(f"{where}{key}: {value!r} is not a Slurm name (A-Z, a-z, 0-9, . _ -)")
    return value


def _slurm(data: dict, shapes: tuple[Shape, ...]) -> SlurmSettings:
    """The `[slurm]` table: where jobs go, how the gateway runs on a node."""
    table = _table(data, "slurm", "")
    _unknown(table, {*_SLURM_PLACEMENT, "container", "state_dir", "bind", "python", "shapes"},
             "slurm.")
    per_shape = _table(table, "shapes", "slurm.")
    names = {s.name for s in shapes}
    placements = {}
    for name, entry in per_shape.items():
        where = f"slurm.shapes.{name}."
        if name not in names:
            raise ConfigError(f"slurm.shapes.{name}: no shape of that name")
        if not isinstance(entry, dict):
            raise ConfigError(f"slurm.shapes.{name}: must be a table")
        _unknown(entry, set(_SLURM_PLACEMENT), where)
        placements[name] = SlurmPlacement(*(_slurm_name(entry, k, where)
                                             for k in _SLURM_PLACEMENT))
    for key in ("state_dir", "python"):
        if key in table and not Path(_str(table, key, "slurm.")).is_absolute():
            raise ConfigError(f"slurm.{key}: must be an absolute path")
    return SlurmSettings(
        **{k: _slurm_name(table, k, "slurm.") for k in _SLURM_PLACEMENT},
        container=_str(table, "container", "slurm.", default=""),
        state_dir=_str(table, "state_dir", "slurm.", default=""),
        bind=_str(table, "bind", "slurm.", default="0.0.0.0"),
        python=_str(table, "python", "slurm.", default=""),
        shapes=placements,
    )


def parse_config(data: dict) -> ProviderConfig:
    _unknown(data, {"provider", "shapes", "images", "availability", "limits", "ledger",
                    "settlement", "tls", "network", "slurm"}, "")
    prov = _table(data, "provider", "")
    _unknown(prov, {"name", "endpoint", "region", "listen_host", "listen_port", "runtime"},
             "provider.")
    shapes = tuple(_shape(s, f"shapes[{i}]") for i, s in enumerate(_list(data, "shapes", "")))
    if not shapes:
        raise ConfigError("shapes: at least one resource shape is required")
    names = [s.name for s in shapes]
    if len(set(names)) != len(names):
        raise ConfigError("shapes: shape names must be unique")
    images = []
    for i, img in enumerate(_list(data, "images", "")):
        w = f"images[{i}]."
        if not isinstance(img, dict):
            raise ConfigError(f"images[{i}]: must be a table")
        _unknown(img, {"name", "reference", "description"}, w)
        images.append(Image(_str(img, "name", w, pattern=_NAME), _str(img, "reference", w),
                            img.get("description", "") if isinstance(img.get("description", ""),
                                                                     str) else ""))
    if not images:
        raise ConfigError("images: at least one image is required")
    avail = _table(data, "availability", "")
    _unknown(avail, {"max_sessions", "reserved_gpus", "max_session_seconds", "schedule"},
             "availability.")
    reserved = avail.get("reserved_gpus", [])
    if not isinstance(reserved, list) or any(
        isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in reserved
    ):
        raise ConfigError("availability.reserved_gpus: must be a list of GPU indices")
    availability = Availability(
        max_sessions=_int(avail, "max_sessions", "availability.", default=4, minimum=1),
        reserved_gpus=tuple(reserved),
        max_session_seconds=_int(avail, "max_session_seconds", "availability.",
                                 default=24 * 3600, minimum=60),
        schedule=tuple(_window(w, f"availability.schedule[{i}]")
                       for i, w in enumerate(_list(avail, "schedule", "availability."))),
    )
    limits = _table(data, "limits", "")
    _unknown(limits, {"max_body_bytes", "signature_window_s"}, "limits.")
    tls = _table(data, "tls", "")
    _unknown(tls, {"mode", "cert", "key"}, "tls.")
    tls_mode = _str(tls, "mode", "tls.", default="self-signed",
                    choices=("self-signed", "files", "off"))
    network = _table(data, "network", "")
    _unknown(network, {"egress"}, "network.")
    ledger = _table(data, "ledger", "")
    _unknown(ledger, {"kind", "path", "rpc_url", "package_id", "key", "gas_budget"}, "ledger.")
    kind = _str(ledger, "kind", "ledger.", default="local", choices=("local", "sui"))
    sui = {key: _str(ledger, key, "ledger.", default="") for key in ("rpc_url", "package_id",
                                                                      "key")}
    check_sui_ledger(kind, sui["rpc_url"], sui["package_id"])
    settle = _table(data, "settlement", "")
    _unknown(settle, set(SETTLEMENT_KEYS), "settlement.")
    defaults = SettlementPolicy()
    policy = SettlementPolicy(**{
        key: _int(settle, key, "settlement.", default=getattr(defaults, key))
        for key in SETTLEMENT_KEYS})
    if why := policy.problem():
        raise ConfigError(f"settlement.{why}")
    port = _int(prov, "listen_port", "provider.", default=8765)
    if port > 65535:
        raise ConfigError("provider.listen_port: must be <= 65535")
    scheme = "http" if tls_mode == "off" else "https"
    endpoint = _str(prov, "endpoint", "provider.", default=f"{scheme}://127.0.0.1:{port}")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError("provider.endpoint: must start with http:// or https://")
    listen_host = _str(prov, "listen_host", "provider.", default="127.0.0.1")
    if tls_mode == "off" and listen_host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError("tls.mode: plain HTTP is allowed only on a loopback listen_host")
    return ProviderConfig(
        name=_str(prov, "name", "provider.", pattern=_NAME),
        endpoint=endpoint.rstrip("/"),
        region=_str(prov, "region", "provider.", default="local"),
        listen_host=listen_host,
        listen_port=port,
        runtime=_str(prov, "runtime", "provider.", default="auto",
                     choices=("auto", "docker", "process", "slurm")),
        shapes=shapes,
        images=tuple(images),
        availability=availability,
        max_body_bytes=_int(limits, "max_body_bytes", "limits.", default=1024 * 1024,
                            minimum=1024),
        signature_window_s=_int(limits, "signature_window_s", "limits.", default=60, minimum=5),
        tls=tls_mode,
        tls_cert=_str(tls, "cert", "tls.", default="tls/cert.pem"),
        tls_key=_str(tls, "key", "tls.", default="tls/key.pem"),
        ledger=kind,
        ledger_rpc_url=sui["rpc_url"],
        ledger_package_id=sui["package_id"],
        ledger_key=sui["key"],
        ledger_gas_budget=_int(ledger, "gas_budget", "ledger.", default=50_000_000, minimum=1),
        ledger_path=_str(ledger, "path", "ledger.", default=None) if "path" in ledger else None,
        egress=_str(network, "egress", "network.", default="internet", choices=EGRESS),
        settlement=policy,
        slurm=_slurm(data, shapes),
    )


def check_sui_ledger(kind: str, rpc_url: str, package_id: str) -> None:
    """[ledger] kind = "sui" names its node and package; nothing else uses those keys."""
    if kind != "sui":
        return
    if not rpc_url.startswith(("http://", "https://")):
        raise ConfigError("ledger.rpc_url: kind \"sui\" needs the Sui GraphQL URL "
                          "(http:// or https://)")
    if not _PACKAGE_ID.match(package_id):
        raise ConfigError("ledger.package_id: kind \"sui\" needs the walnut package id "
                          "(0x + hex)")


def load_config(path: Path) -> ProviderConfig:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"no provider config at {path} (run `walnut-provider init`)") from exc
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data)


def default_config_text(name: str, gpu_count: int, cpu_count: int, memory_mb: int,
                        port: int = 8765) -> str:
    """A starting config sized to the detected hardware; the owner edits prices."""
    cpus_small = max(1, min(2, cpu_count))
    lines = [
        "# Walnut provider configuration. Prices are integer MIST per second (1 SUI = 10^9 MIST).",
        "[provider]",
        f'name = "{name}"',
        f'endpoint = "https://127.0.0.1:{port}"  # the address renters reach',
        'region = "local"',
        'listen_host = "127.0.0.1"',
        f"listen_port = {port}",
        'runtime = "auto"  # auto (docker when an engine answers, else process) | docker | process',
        "",
        "[[shapes]]",
        'name = "cpu-small"',
        "gpus = 0",
        f"cpus = {cpus_small}",
        f"memory_mb = {max(512, min(2048, memory_mb // 4))}",
        "price_mist_per_second = 2000  # 0.0072 SUI per hour",
        "disk_mb = 10240  # workspace allowance; writing past it fails inside the session",
    ]
    if gpu_count:
        lines += [
            "",
            "[[shapes]]",
            'name = "gpu-1"',
            "gpus = 1",
            f"cpus = {max(1, cpu_count // max(gpu_count, 1))}",
            f"memory_mb = {max(1024, memory_mb // max(gpu_count, 1) // 2)}",
            "price_mist_per_second = 50000  # 0.18 SUI per hour",
        ]
    lines += [
        "",
        "[[images]]",
        'name = "python"',
        'reference = "builtin"  # the Walnut gateway image (built offline when needed)',
        'description = "Python 3 with ipykernel and numpy"',
        "",
        "[availability]",
        "max_sessions = 4",
        "reserved_gpus = []  # GPU indices kept for the owner",
        "max_session_seconds = 86400",
        "# schedule: when new sessions are accepted; none means always.",
        "# [[availability.schedule]]",
        '# days = ["mon", "tue", "wed", "thu", "fri"]',
        '# start = "19:00"',
        '# end = "24:00"',
        "",
        "[network]",
        '# what session containers may reach: "internet" (not this host, the LAN, cloud',
        '# metadata or other private ranges) or "offline" (nothing)',
        'egress = "internet"',
        "",
        "[tls]",
        'mode = "self-signed"  # self-signed (made by init) | files (your CA cert) | off',
        '# cert = "tls/cert.pem"  # for mode = "files": paths, relative to this directory',
        '# key = "tls/key.pem"',
        "",
        "[ledger]",
        'kind = "local"  # the embedded ledger shared by everything on this machine',
        '# path = "/path/to/ledger.sqlite"  # default: $WALNUT_LEDGER or the Walnut home',
        "",
        "[settlement]",
        "grace_seconds = 30  # stop a session whose vouchers fall this far behind",
        "min_prepaid_seconds = 60  # a channel must lock at least this much time",
        "",
    ]
    return "\n".join(lines)


def slurm_config_text(name: str, nodes: list[dict], port: int = 8765) -> str:
    """A provider.toml for the cluster sinfo showed: shapes sized to its largest node, jobs
    sent to its default partition (the owner picks partition, account and QoS)."""
    up = [n for n in nodes if n["state"].rstrip("*~#!%$@") in ("idle", "mix", "alloc")]
    if not up:
        raise ConfigError("slurm: sinfo shows no node that is up")
    biggest = max(up, key=lambda n: (n["gpus"], n["cpus"], n["memory_mb"]))
    partition = next((n["partition"] for n in up if n["default_partition"]),
                     biggest["partition"])
    text = default_config_text(name, biggest["gpus"], biggest["cpus"], biggest["memory_mb"],
                               port=port)
    runtime_line = next(line for line in text.splitlines() if line.startswith("runtime ="))
    text = text.replace(runtime_line, 'runtime = "slurm"  # sessions are Slurm jobs ([slurm])')
    return text + "\n".join([
        "",
        "[slurm]",
        f'partition = "{partition}"  # where session jobs go; per shape: [slurm.shapes.NAME]',
        '# account = "walnut"  # the Slurm account that is charged',
        '# qos = "scavenger"  # e.g. a preemptible QoS for sold hours',
        '# container = "apptainer exec /images/walnut.sif"  # the gateway inside a container',
        '# state_dir = "/shared/walnut"  # must be on a file system the nodes share',
        '# bind = "0.0.0.0"  # the gateway listens here on its node; the provider proxies to it',
        '# python = "/opt/walnut/bin/python"  # a Python on the nodes with walnut_gateway',
        "",
    ])
