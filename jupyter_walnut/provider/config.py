"""The provider's configuration file (`provider.toml`): prices, availability, images, endpoint.

Every key is declared once, in config_schema.py (type, default, bounds, help); a file is
checked against it on load and refused with the offending key named, e.g.
`shapes[1].price_per_second_mist: must be an integer (MIST), not a float`. This module adds
the rules that span keys and builds the node's settings.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_schema import DAYS, ROOT, ConfigError, DeprecatedKeyWarning, read, render
from .image import ImageBuildError, builtin_flavor
from .runtimes.slurm import SlurmPlacement, SlurmSettings
from .settlement import SettlementPolicy

__all__ = ["DAYS", "Availability", "ConfigError", "DeprecatedKeyWarning", "Image",
           "ProviderConfig", "ResultsPolicy", "Shape", "Window", "default_config_text",
           "load_config", "parse_config", "slurm_config_text"]

# provider.toml's settlement keys -> SettlementPolicy's fields (the old key names)
_SETTLEMENT_FIELDS = {"grace_s": "grace_seconds", "min_prepaid_s": "min_prepaid_seconds"}


@dataclass(frozen=True)
class Shape:
    """A resource shape the provider rents out, at an integer price in MIST per second."""

    name: str
    gpus: int
    cpus: float
    memory_mb: int
    price_mist_per_second: int  # provider.toml: price_per_second_mist
    disk_mb: int  # the session's workspace (Docker: a loop-mounted ext4 of this size)


@dataclass(frozen=True)
class Image:
    name: str  # what renters ask for
    reference: str  # a Docker image reference, or "builtin[:<flavor>]": the offline-built one
    description: str


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
    max_sessions: int
    reserved_gpus: tuple[int, ...]
    max_session_seconds: int  # provider.toml: max_session_s
    schedule: tuple[Window, ...]  # empty: always open

    def open_at(self, when: dt.datetime) -> bool:
        return not self.schedule or any(w.contains(when) for w in self.schedule)


@dataclass(frozen=True)
class ResultsPolicy:
    """provider.toml's [results]: how long, how much, at what price, how long to save."""

    keep_hours: float = 24.0
    max_mb: int = 1024
    price_mist_per_gb_hour: int = 0
    save_timeout_s: int = 60

    @property
    def max_bytes(self) -> int:
        return self.max_mb << 20

    def offer(self) -> dict:
        """What the offer says of it (GET /status, under settlement)."""
        return {"keep_hours": self.keep_hours, "max_mb": self.max_mb,
                "price_mist_per_gb_hour": self.price_mist_per_gb_hour,
                "enabled": self.max_mb > 0 and self.keep_hours > 0}


@dataclass(frozen=True)
class ProviderConfig:
    """The node's settings; defaults live in config_schema.py, not here."""

    name: str
    endpoint: str
    region: str
    listen_host: str
    listen_port: int
    runtime: str  # auto | docker | process | slurm
    shapes: tuple[Shape, ...]
    images: tuple[Image, ...]
    availability: Availability
    max_body_bytes: int
    signature_window_s: int
    tls: str  # self-signed | files | off (plain HTTP, loopback only)
    tls_cert: str  # relative to the provider home
    tls_key: str
    ledger: str  # local | sui (the Sui ledger is configured in [ledger])
    ledger_path: str | None  # local ledger file; None: the shared Walnut ledger
    ledger_rpc_url: str  # kind "sui": the Sui GraphQL service
    ledger_package_id: str  # kind "sui": the published walnut Move package
    ledger_key: str  # kind "sui": "" the identity key, "sui-cli", or a key file
    ledger_gas_budget: int  # kind "sui": most MIST of gas per transaction
    egress: str  # internet (no host, LAN or metadata addresses) | offline
    settlement: SettlementPolicy
    slurm: SlurmSettings  # [slurm], runtime "slurm"
    # [packages]: the node's package cache (package_cache.py)
    packages_cache: str = "devpi"  # devpi | off
    packages_upstream_url: str = ""  # "": devpi's own default
    packages_port: int = 0  # 0: chosen once, kept in the state directory
    # [environments]: prepared-environment cache bound and install timeout (issue #15)
    environments_cache_mb: int = 10240
    install_timeout_s: int = 1800
    # [results]: a session's changed files kept for its renter after it ends (issue #16)
    results: ResultsPolicy = ResultsPolicy()

    def shape(self, name: str) -> Shape | None:
        return next((s for s in self.shapes if s.name == name), None)

    def image(self, name: str) -> Image | None:
        return next((i for i in self.images if i.name == name), None)


# --- the rules that span keys ---------------------------------------------------------


def _shapes(rows: list[dict]) -> tuple[Shape, ...]:
    if not rows:
        raise ConfigError("shapes: at least one resource shape is required")
    names = [row["name"] for row in rows]
    if len(set(names)) != len(names):
        raise ConfigError("shapes: shape names must be unique")
    return tuple(Shape(row["name"], row["gpus"], row["cpus"], row["memory_mb"],
                       row["price_per_second_mist"], row["disk_mb"]) for row in rows)


def _availability(values: dict) -> Availability:
    windows = []
    for i, row in enumerate(values["schedule"]):
        if row["start"] >= row["end"]:
            raise ConfigError(f"availability.schedule[{i}].end: must be after start")
        windows.append(Window(tuple(row["days"]), row["start"], row["end"]))
    return Availability(values["max_sessions"], tuple(values["reserved_gpus"]),
                        values["max_session_s"], tuple(windows))


def _settlement(values: dict) -> SettlementPolicy:
    policy = SettlementPolicy(**{_SETTLEMENT_FIELDS.get(k, k): v for k, v in values.items()})
    if why := policy.problem():
        raise ConfigError(f"settlement.{why}")
    return policy


def _slurm(values: dict, shapes: tuple[Shape, ...]) -> SlurmSettings:
    names = {s.name for s in shapes}
    for name in values["shapes"]:
        if name not in names:
            raise ConfigError(f"slurm.shapes.{name}: no shape of that name")
    placements = {name: SlurmPlacement(**row) for name, row in values["shapes"].items()}
    return SlurmSettings(**{**values, "shapes": placements})


def _sui_checked(values: dict) -> dict:
    """kind = "sui" names its node and package; nothing else uses those keys."""
    if values["kind"] == "sui":
        for key, what in (("rpc_url", "the Sui GraphQL URL"), ("package_id",
                                                               "the walnut package id")):
            if not values[key]:
                raise ConfigError(f'ledger.{key}: kind "sui" needs {what}')
    return values


def _images(rows: list[dict]) -> tuple[Image, ...]:
    """`builtin` / `builtin:<flavor>` must name a flavor the offline build knows."""
    for i, row in enumerate(rows):
        try:
            builtin_flavor(row["reference"])
        except ImageBuildError as exc:
            raise ConfigError(f"images[{i}].reference: {exc}") from None
    return tuple(Image(**row) for row in rows)


def parse_config(data: dict) -> ProviderConfig:
    values = read(ROOT, data)
    prov, tls, limits = values["provider"], values["tls"], values["limits"]
    shapes = _shapes(values["shapes"])
    if not values["images"]:
        raise ConfigError("images: at least one image is required")
    scheme = "http" if tls["mode"] == "off" else "https"
    endpoint = prov["endpoint"] or f"{scheme}://127.0.0.1:{prov['listen_port']}"
    if tls["mode"] == "off" and prov["listen_host"] not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError("tls.mode: plain HTTP is allowed only on a loopback listen_host")
    return ProviderConfig(
        name=prov["name"],
        endpoint=endpoint.rstrip("/"),
        region=prov["region"],
        listen_host=prov["listen_host"],
        listen_port=prov["listen_port"],
        runtime=prov["runtime"],
        shapes=shapes,
        images=_images(values["images"]),
        availability=_availability(values["availability"]),
        max_body_bytes=limits["max_body_bytes"],
        signature_window_s=limits["signature_window_s"],
        tls=tls["mode"],
        tls_cert=tls["cert"],
        tls_key=tls["key"],
        ledger=_sui_checked(values["ledger"])["kind"],
        ledger_path=values["ledger"]["path"],
        ledger_rpc_url=values["ledger"]["rpc_url"],
        ledger_package_id=values["ledger"]["package_id"],
        ledger_key=values["ledger"]["key"],
        ledger_gas_budget=values["ledger"]["gas_budget"],
        egress=values["network"]["egress"],
        settlement=_settlement(values["settlement"]),
        slurm=_slurm(values["slurm"], shapes),
        packages_cache=values["packages"]["cache"],
        packages_upstream_url=values["packages"]["upstream_url"],
        packages_port=values["packages"]["port"],
        environments_cache_mb=values["environments"]["cache_mb"],
        install_timeout_s=values["environments"]["install_timeout_s"],
        results=ResultsPolicy(**values["results"]),
    )


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


# --- the file `init` writes -------------------------------------------------------------

_HEADER = ("Walnut provider configuration: every key with its default (docs: the "
           "configuration reference). Prices are integer MIST per second (1 SUI = 10^9 MIST).")


def _template_values(name: str, gpu_count: int, cpu_count: int, memory_mb: int,
                     port: int) -> dict[str, Any]:
    """What `init` writes beyond the schema's defaults: the node and shapes sized to the
    hardware (the owner edits prices)."""
    shapes = [{"name": "cpu-small", "gpus": 0, "cpus": max(1, min(2, cpu_count)),
               "memory_mb": max(512, min(2048, memory_mb // 4)),
               "price_per_second_mist": 2000}]  # 0.0072 SUI per hour
    if gpu_count:
        shapes.append({"name": "gpu-1", "gpus": 1, "cpus": max(1, cpu_count // gpu_count),
                       "memory_mb": max(1024, memory_mb // gpu_count // 2),
                       "price_per_second_mist": 50000})  # 0.18 SUI per hour
    return {"provider": {"name": name, "endpoint": f"https://127.0.0.1:{port}",
                         "listen_port": port},
            "shapes": shapes,
            "images": [{"name": "python", "reference": "builtin",
                        "description": "Python 3 with ipykernel and numpy"}]}


def default_config_text(name: str, gpu_count: int, cpu_count: int, memory_mb: int,
                        port: int = 8765) -> str:
    """A starting config sized to the detected hardware, every other key at its default."""
    return render({**_template_values(name, gpu_count, cpu_count, memory_mb, port),
                   "slurm": False}, _HEADER)


def slurm_config_text(name: str, nodes: list[dict], port: int = 8765) -> str:
    """A provider.toml for the cluster sinfo showed: shapes sized to its largest node, jobs
    sent to its default partition (the owner picks partition, account and QoS)."""
    up = [n for n in nodes if n["state"].rstrip("*~#!%$@") in ("idle", "mix", "alloc")]
    if not up:
        raise ConfigError("slurm: sinfo shows no node that is up")
    biggest = max(up, key=lambda n: (n["gpus"], n["cpus"], n["memory_mb"]))
    partition = next((n["partition"] for n in up if n["default_partition"]),
                     biggest["partition"])
    values = _template_values(name, biggest["gpus"], biggest["cpus"], biggest["memory_mb"],
                              port)
    values["provider"]["runtime"] = "slurm"
    values["slurm"] = {"partition": partition}
    return render(values, _HEADER)
