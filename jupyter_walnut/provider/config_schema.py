"""The one declaration of `provider.toml`: every table and key with its type, default,
bounds, allowed values, old names and a one-line help.

config.py validates a file with it (`read`), `walnut-provider init` writes its template
from it (`render`) and docs/gen_reference.py documents it. Units are suffixes: `_s`
seconds, `_mb` MiB, `_bytes` bytes, `_mist` MIST. A key's old names still load, with a
`DeprecatedKeyWarning` naming the new key.
"""

from __future__ import annotations

import copy
import json
import re
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..common.errors import BadRequest

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EGRESS = ("internet", "offline")  # what a session container may reach (see runtimes/egress.py)
RUNTIMES = ("auto", "docker", "process", "slurm")
TLS_MODES = ("self-signed", "files", "off")
LEDGERS = ("local", "sui")
_PACKAGE_ID = re.compile(r"^0x[0-9a-fA-F]{1,64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
_URL = re.compile(r"^https?://")
NAME_ERROR = "{value!r} is not a valid name (a-z, 0-9, . _ -)"
SLURM_NAME_ERROR = "{value!r} is not a Slurm name (A-Z, a-z, 0-9, . _ -)"

Kind = Literal["int", "number", "str", "bool", "list", "table", "array", "map"]


class ConfigError(BadRequest, ValueError):
    """An invalid configuration value; the message names the key."""


class DeprecatedKeyWarning(FutureWarning):
    """A provider.toml key under its old name; the message names the new one."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def _absolute(value: str) -> str | None:
    return None if Path(value).is_absolute() else "must be an absolute path"


@dataclass(frozen=True)
class Field:
    """One key. `kind` "table", "array" (of tables) and "map" (tables by name) hold
    `section`; "list" holds `items` ("int" or "str") that `choices`/`minimum` apply to."""

    name: str
    kind: Kind
    help: str
    default: Any = REQUIRED  # None: computed from other keys (default_doc says how)
    minimum: int | float | None = None
    maximum: int | float | None = None
    above: bool = False  # the minimum itself is refused (cpus > 0)
    choices: tuple[str, ...] = ()
    pattern: re.Pattern | None = None
    pattern_error: str = ""  # str.format(value=...) when the pattern does not match
    check: Callable[[Any], str | None] | None = None  # another rule: why the value is wrong
    items: Literal["int", "str", ""] = ""
    min_items: int = 0
    error: str = ""  # the message for a bad list
    unit: str = ""  # "MIST": a float is refused with its own message
    old: tuple[str, ...] = ()  # deprecated names, still read
    default_doc: str = ""  # how the docs show a computed or unusual default
    example: Any = None  # written commented out by `init` where the default is unset
    section: Section | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Section:
    """A table's keys, in file order."""

    path: str  # as the docs name it: "provider", "shapes[]", "slurm.shapes.<name>"
    fields: tuple[Field, ...]
    by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})

    def __getitem__(self, name: str) -> Field:
        return self.by_name[name]


def _section(path: str, *fields: Field) -> Section:
    return Section(path, fields)


def _seconds(name: str, default: int, help: str, minimum: int = 0, old: str = "") -> Field:
    return Field(name, "int", help, default, minimum=minimum, old=(old,) if old else ())


def _slurm_names(what: str) -> tuple[Field, ...]:
    return tuple(Field(key, "str", f"{label} {what}.", "", pattern=_SLURM_NAME,
                       pattern_error=SLURM_NAME_ERROR, default_doc=doc, example=example)
                 for key, label, doc, example in (
                     ("partition", "Partition of", '`""` (the default partition)', "gpu"),
                     ("account", "Slurm account charged for", '`""`', "walnut"),
                     ("qos", "Quality of service of", '`""`', "scavenger")))


PROVIDER = _section(
    "provider",
    Field("name", "str", "Node name shown to renters (a-z, 0-9, `.`, `_`, `-`).",
          pattern=_NAME, pattern_error=NAME_ERROR),
    Field("endpoint", "str", "The URL renters reach this node at; put it in `register`.",
          None, pattern=_URL, pattern_error="must start with http:// or https://",
          default_doc="`https://127.0.0.1:<listen_port>` (`http://` with TLS off)"),
    Field("region", "str", "Free-form region label shown in offers.", "local"),
    Field("listen_host", "str", "Address the API binds to; `0.0.0.0` to serve other "
          "machines.", "127.0.0.1"),
    Field("listen_port", "int", "Port of the API, the gateway proxy and `/metrics`.", 8765,
          minimum=0, maximum=65535),
    Field("runtime", "str", "`auto` (Docker when an engine answers, else local processes), "
          "`docker`, `process` or `slurm` (sessions are Slurm jobs, see `[slurm]`).", "auto",
          choices=RUNTIMES),
)

SHAPE = _section(
    "shapes[]",
    Field("name", "str", "Shape name renters pick, unique per node.", pattern=_NAME,
          pattern_error=NAME_ERROR),
    Field("gpus", "int", "Whole GPUs per session of this shape.", 0, minimum=0),
    Field("cpus", "number", "CPU cores (fractions allowed).", minimum=0, maximum=1024,
          above=True),
    Field("memory_mb", "int", "Memory limit in MiB.", minimum=64),
    Field("price_per_second_mist", "int", "Price in integer MIST per second "
          "(1 SUI = 10^9 MIST); a float is refused.", minimum=0, unit="MIST",
          old=("price_mist_per_second",)),
    Field("disk_mb", "int", "Workspace allowance in MiB; on Docker a loop-mounted ext4 image "
          "and a bounded `/tmp`: writing past it fails inside the session.", 10240,
          minimum=64),
)

IMAGE = _section(
    "images[]",
    Field("name", "str", "Image name renters ask for (e.g. `python`).", pattern=_NAME,
          pattern_error=NAME_ERROR),
    Field("reference", "str", "Docker image reference, or `builtin:<flavor>` for a Walnut "
          "gateway image built on this machine: `builtin:python` (plain `builtin`), "
          "`builtin:scipy` or `builtin:pytorch`."),
    Field("description", "str", "Shown in offers.", ""),
)

WINDOW = _section(
    "availability.schedule[]",
    Field("days", "list", "Days of the window.", list(DAYS), items="str", choices=DAYS,
          min_items=1, error="must be a list of " + ", ".join(DAYS), default_doc="all days"),
    Field("start", "str", "HH:MM, provider local time.", "00:00", pattern=_HHMM,
          pattern_error="must be HH:MM"),
    Field("end", "str", "HH:MM or 24:00; after `start`.", "24:00", pattern=_HHMM,
          pattern_error="must be HH:MM"),
)

AVAILABILITY = _section(
    "availability",
    Field("max_sessions", "int", "Most sessions running at once.", 4, minimum=1),
    Field("reserved_gpus", "list", "GPU indices kept for the owner, never rented.", [],
          items="int", minimum=0, error="must be a list of GPU indices"),
    _seconds("max_session_s", 24 * 3600, "Longest a session may run, in seconds.", minimum=60,
             old="max_session_seconds"),
    Field("schedule", "array", "Windows when new sessions are accepted; none: always open.",
          [], section=WINDOW, default_doc="`[]` (always open)",
          example=[{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "19:00",
                    "end": "24:00"}]),
)

LIMITS = _section(
    "limits",
    Field("max_body_bytes", "int", "Largest API request body, in bytes.", 1024 * 1024,
          minimum=1024),
    _seconds("signature_window_s", 60, "How far a signed request's timestamp may be off, in "
             "seconds.", minimum=5),
)

NETWORK = _section(
    "network",
    Field("egress", "str", "What session containers may reach: `internet` (not this host, "
          "private, shared or link-local ranges, cloud metadata, IPv6) or `offline` "
          "(nothing).", "internet", choices=EGRESS),
)

PACKAGES = _section(
    "packages",
    Field("cache", "str", "`devpi`: the node runs a devpi-server package cache that every "
          "session installs from (sessions cannot write to it); `off`: sessions use no index "
          "of the node's.", "devpi", choices=("devpi", "off")),
    Field("upstream_url", "str", "The simple index the cache mirrors (hash-checked); empty for "
          "devpi's own default.", "", pattern=_URL,
          pattern_error="must start with http:// or https://",
          default_doc='`""` (devpi\'s default index)', example="http://mirror.example/simple/"),
    Field("port", "int", "Loopback port of the cache; 0: a free one, chosen once and kept in "
          "the state directory (adopted sessions still reach it after a restart).", 0,
          minimum=0, maximum=65535),
)

TLS = _section(
    "tls",
    Field("mode", "str", "`self-signed` (made by `init`), `files` (your own certificate) or "
          "`off` (plain HTTP, loopback `listen_host` only).", "self-signed", choices=TLS_MODES),
    Field("cert", "str", "Certificate (PEM), relative to the provider home.", "tls/cert.pem"),
    Field("key", "str", "Private key (PEM), relative to the provider home.", "tls/key.pem"),
)

LEDGER = _section(
    "ledger",
    Field("kind", "str", "The settlement ledger: `local` (the embedded SQLite ledger shared by "
          "everything on this machine) or `sui` (the walnut Move package on a Sui network: "
          "`rpc_url`, `package_id`, `key`).", "local", choices=LEDGERS),
    Field("path", "str", "Local ledger file; share one file with renters on the same "
          "machine.", None, default_doc="`$WALNUT_LEDGER`, else the Walnut home's "
          "`ledger.sqlite`", example="/path/to/ledger.sqlite"),
    # kind = "sui" (issue #14, ledger selection): the node, package and key it settles with
    Field("rpc_url", "str", "kind `sui`: the Sui GraphQL service the node reads channels from "
          "and sends claims to.", "", pattern=_URL,
          pattern_error="must start with http:// or https://",
          example="http://127.0.0.1:9125/graphql"),
    Field("package_id", "str", "kind `sui`: the published walnut Move package (0x...).", "",
          pattern=_PACKAGE_ID, pattern_error="must be 0x followed by hex digits",
          example="0x" + "ab" * 32),
    Field("key", "str", "kind `sui`: the key the provider is known and paid by: empty for "
          "`identity.key`, `sui-cli` for the sui CLI's active address, or a key file "
          "(`suiprivkey1...`). It is the node's address: renters' channels name it.", "",
          example="sui-cli"),
    Field("gas_budget", "int", "kind `sui`: most MIST of gas one claim or close may use.",
          50_000_000, minimum=1),
)

SETTLEMENT = _section(
    "settlement",
    _seconds("grace_s", 30, "Stop a session whose vouchers fall this many seconds behind its "
             "metered time.", old="grace_seconds"),
    _seconds("min_prepaid_s", 60, "A channel must lock at least this many seconds at the "
             "shape's price.", old="min_prepaid_seconds"),
    _seconds("min_challenge_period_s", 60, "Shortest challenge period, in seconds, accepted "
             "on a renter's channel."),
    _seconds("settle_after_s", 15, "Wait this many seconds after a session ends for the "
             "renter's final voucher, then claim."),
    _seconds("channel_check_interval_s", 5, "Read each running session's channel on the "
             "ledger this often (seconds, below `min_challenge_period_s`): a close request is "
             "claimed at once.", minimum=1),
    _seconds("claim_interval_s", 600, "Claim the newest voucher of a long session this often, "
             "in seconds.", minimum=1),
    Field("bills_install", "bool", "Meter a session while its launch requirements install "
          "(offers show it); false: metering begins once the session runs.", False),
)

ENVIRONMENTS = _section(
    "environments",
    Field("cache_mb", "int", "Most MiB of prepared session environments (requirements "
          "installed at launch) kept for their renter's next launch; least recently used go "
          "first, 0 keeps none.", 10240, minimum=0),
    _seconds("install_timeout_s", 1800, "Longest a launch's requirements may take to "
             "install, in seconds; then the launch fails.", minimum=10),
)

RESULTS = _section(
    "results",
    Field("keep_hours", "number", "Hours a session's results (files created or changed in its "
          "workspace) are kept for its renter after it ends; 0 keeps none.", 24, minimum=0,
          maximum=24 * 365),
    Field("max_mb", "int", "Most MiB of one session's results; a file past it is listed as "
          "left out, never cut. 0 saves none.", 1024, minimum=0, maximum=1 << 20),
    Field("price_mist_per_gb_hour", "int", "Price of keeping results, in MIST per GB-hour "
          "(offers show it); 0: free.", 0, minimum=0, unit="MIST"),
    _seconds("save_timeout_s", 60, "Longest the save of a session's results may take, in "
             "seconds; then the session stops anyway and its results say why.", minimum=1),
)

SLURM_SHAPE = _section("slurm.shapes.<name>", *_slurm_names("this shape's jobs"))

SLURM = _section(
    "slurm",
    *_slurm_names("Walnut's jobs"),
    Field("container", "str", "Command prefix running the gateway inside a container "
          "(`{session_dir}` is replaced); needed to rent to strangers.", "",
          example="apptainer exec /images/walnut.sif"),
    Field("state_dir", "str", "Absolute path on a file system the nodes share: per-session "
          "files and endpoints.", "", check=_absolute,
          default_doc="the provider home's `slurm/`", example="/shared/walnut"),
    Field("bind", "str", "Address the gateway binds to on its node; the provider proxies to "
          "it.", "0.0.0.0"),
    Field("python", "str", "Absolute path of the Python with walnut_gateway on the nodes.", "",
          check=_absolute, default_doc="the provider's interpreter",
          example="/opt/walnut/bin/python"),
    Field("shapes", "map", "Per-shape placement: `[slurm.shapes.NAME]` tables.", {},
          section=SLURM_SHAPE, example={"gpu-1": {"partition": "gpu"}}),
)

ROOT = _section(
    "",
    Field("provider", "table", "This node.", section=PROVIDER, default={}),
    Field("shapes", "array", "The resource shapes rented out; at least one.", [],
          section=SHAPE),
    Field("images", "array", "The images renters may run; at least one.", [], section=IMAGE),
    Field("availability", "table", "When and how much is rented.", {}, section=AVAILABILITY),
    Field("limits", "table", "Request limits of the API.", {}, section=LIMITS),
    Field("network", "table", "What sessions may reach.", {}, section=NETWORK),
    Field("packages", "table", "The node's package cache sessions install from.", {},
          section=PACKAGES),
    Field("tls", "table", "The API's certificate.", {}, section=TLS),
    Field("ledger", "table", "Where channels and payments live.", {}, section=LEDGER),
    Field("settlement", "table", "When sessions are stopped and vouchers claimed.", {},
          section=SETTLEMENT),
    Field("environments", "table", "Requirements installed at launch and their prepared "
          "environments.", {}, section=ENVIRONMENTS),
    Field("results", "table", "A session's results kept after it ends (nothing lost at the "
          "end).", {}, section=RESULTS),
    Field("slurm", "table", "Runtime `slurm`: where jobs go and how the gateway runs on a "
          "node.", {}, section=SLURM),
)


# --- reading ----------------------------------------------------------------------------


def _check(f: Field, value: Any, key: str) -> Any:
    """`value` for field `f`, or ConfigError naming `key` and the rule it breaks."""
    def fail(reason: str) -> ConfigError:
        return ConfigError(f"{key}: {reason}")

    if f.kind == "int":
        if f.unit == "MIST" and isinstance(value, float):
            raise fail("must be an integer (MIST), not a float")
        if isinstance(value, bool) or not isinstance(value, int) or value < (f.minimum or 0):
            raise fail(f"must be an integer >= {f.minimum or 0}")
        if f.maximum is not None and value > f.maximum:
            raise fail(f"must be <= {f.maximum}")
        return value
    if f.kind == "number":
        low = f.minimum or 0
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                (value <= low if f.above else value < low) or \
                (f.maximum is not None and value > f.maximum):
            raise fail(f"must be a number {'>' if f.above else '>='} {low}"
                       + (f" and <= {f.maximum}" if f.maximum is not None else ""))
        return float(value)
    if f.kind == "bool":
        if not isinstance(value, bool):
            raise fail("must be true or false")
        return value
    if f.kind == "str":
        if not isinstance(value, str) or (not value and f.default != ""):
            raise fail("must be a string" if f.default == "" else "must be a non-empty string")
        if value and f.pattern is not None and not f.pattern.match(value):
            raise fail(f.pattern_error.format(value=value))
        if f.choices and value not in f.choices:
            raise fail(f"must be one of {', '.join(f.choices)}")
        if value and f.check is not None and (why := f.check(value)):
            raise fail(why)
        return value
    if f.kind == "list":
        item_type = int if f.items == "int" else str
        if not isinstance(value, list) or len(value) < f.min_items or any(
                isinstance(v, bool) or not isinstance(v, item_type)
                or (f.choices and v not in f.choices)
                or (f.minimum is not None and v < f.minimum) for v in value):
            raise fail(f.error)
        return list(value)
    assert f.section is not None
    if f.kind == "table":
        return read(f.section, value, key + ".")
    if f.kind == "array":
        if not isinstance(value, list):
            raise fail("must be a list")
        return [read(f.section, item, f"{key}[{i}].") for i, item in enumerate(value)]
    if not isinstance(value, dict):  # map: tables by name
        raise fail("must be a table")
    return {name: read(f.section, item, f"{key}.{name}.") for name, item in value.items()}


def read(section: Section, data: Any, where: str = "") -> dict[str, Any]:
    """A table's values by key, defaults filled in, old key names read as the new ones;
    ConfigError names the first bad key (`where` is its prefix, e.g. "shapes[1].")."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.')}: must be a table")
    data, written = dict(data), {}  # written: the old name a key was given under
    for f in section.fields:
        for old in f.old:
            if old not in data:
                continue
            if f.name in data:
                raise ConfigError(f"{where}{old}: the old name of {where}{f.name}, which is "
                                  "also given; keep only one")
            warnings.warn(DeprecatedKeyWarning(
                f"{where}{old} is deprecated: rename it to {where}{f.name}"), stacklevel=3)
            data[f.name], written[f.name] = data.pop(old), old
    extra = sorted(set(data) - set(section.by_name))
    if extra:
        raise ConfigError(f"{where}{extra[0]}: unknown key")
    out = {}
    for f in section.fields:
        if f.name in data:
            out[f.name] = _check(f, data[f.name], where + written.get(f.name, f.name))
        elif f.required:
            raise ConfigError(f"{where}{f.name}: required")
        elif f.kind == "table":
            out[f.name] = _check(f, {}, where + f.name)
        else:  # a copy: a caller may keep and change the lists it gets
            out[f.name] = copy.deepcopy(f.default)
    return out


# --- writing (the template `init` writes) -------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the values written here
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _comment(text: str, prefix: str = "") -> list[str]:
    return textwrap.wrap(text.replace("`", ""), 94 - len(prefix),
                         initial_indent=prefix + "# ", subsequent_indent=prefix + "# ")


def _table_lines(section: Section, values: dict[str, Any], header: str,
                 commented: bool = False) -> list[str]:
    """`[header]` and each key with its help above it; a key with no value to write is
    commented out with its example (or left out)."""
    mark = "# " if commented else ""
    lines = [mark + header]
    nested = []
    for f in section.fields:
        if f.section is not None:
            nested.append(f)
            continue
        value = values.get(f.name, f.default)
        lines += _comment(f.help)
        if value in (None, "", REQUIRED):
            if f.example is not None:
                lines.append(f"# {f.name} = {toml_value(f.example)}")
            continue
        lines.append(f"{mark}{f.name} = {toml_value(value)}")
    for f in nested:
        assert f.section is not None
        name = f"{header.strip('[]# ')}.{f.name}"
        given = values.get(f.name)
        lines += ["", *_comment(f.help)]
        if f.kind == "array":
            rows, commented_rows = (given, False) if given else (f.example or [], True)
            for row in rows:
                lines += _table_lines(f.section, row, f"[[{name}]]", commented_rows)
        elif f.kind == "map":
            rows, commented_rows = (given, False) if given else (f.example or {}, True)
            for key, row in rows.items():
                lines += _table_lines(f.section, row, f"[{name}.{_toml_key(key)}]",
                                      commented_rows)
    return lines


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def render(values: dict[str, Any], header: str) -> str:
    """provider.toml with `values` ({table: {key: value}}, {array: [tables]}) and every
    other key at its default, each under its help; a table given as False is left out."""
    lines = _comment(header)
    for f in ROOT.fields:
        given = values.get(f.name)
        if given is False:  # the caller leaves this table out
            continue
        assert f.section is not None
        lines.append("")
        lines += _comment(f.help)
        if f.kind == "array":
            for i, row in enumerate(given or []):
                lines += ([""] if i else []) + _table_lines(f.section, row, f"[[{f.name}]]")
        else:
            lines += _table_lines(f.section, given or {}, f"[{f.name}]")
    return "\n".join(lines) + "\n"
