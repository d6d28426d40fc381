"""Reference pages generated from the code, so they cannot drift from it.

- reference/provider-api.md   from jupyter_walnut/provider/openapi.yaml
- reference/configuration.md  from the traitlets classes (WalnutApp, WalnutProvisioner,
                              WalnutMagics) and the keys provider.toml accepts (config.py)
- contracts.md                from contracts/README.md
- threat-model.md             docs/threat-model.md, when that file exists

Used as an MkDocs hook (`hooks:` in docs/mkdocs.yml): the pages are added at build time and
never written into the source tree. Also runnable on its own:
`python docs/gen_reference.py OUTDIR` writes the same markdown files under OUTDIR.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = ROOT / "jupyter_walnut" / "provider" / "openapi.yaml"
CONFIG_PY = ROOT / "jupyter_walnut" / "provider" / "config.py"
CONTRACTS = ROOT / "contracts" / "README.md"
THREAT_MODEL = ROOT / "docs" / "threat-model.md"
METHODS = ("get", "put", "post", "patch", "delete")


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# --- the provider HTTP API ---------------------------------------------------------------


def _anchor(name: str) -> str:
    return "schema-" + name.lower()


def _type(schema: dict) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{_anchor(name)})"
    kind = schema.get("type", "object")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    extra = []
    if "enum" in schema:
        extra.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "pattern" in schema:
        extra.append(f"pattern `{schema['pattern']}`")
    if "minimum" in schema:
        op = ">" if schema.get("exclusiveMinimum") else ">="
        extra.append(f"{op} {schema['minimum']}")
    if schema.get("nullable"):
        extra.append("nullable")
    return kind + (f" ({'; '.join(extra)})" if extra else "")


def _schema_table(schema: dict) -> list[str]:
    props = schema.get("properties", {})
    if not props:
        return [f"Type: {_type(schema)}", ""]
    required = set(schema.get("required", []))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in props.items():
        rows.append(f"| `{name}` | {_cell(_type(prop))} | {'yes' if name in required else ''} "
                    f"| {_cell(prop.get('description', ''))} |")
    if schema.get("additionalProperties") is False:
        rows.append("")
        rows.append("Other fields are refused.")
    return [*rows, ""]


def _resolve(spec: dict, obj: dict) -> dict:
    while "$ref" in obj:
        node: object = spec
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]  # type: ignore[index]
        obj = node  # type: ignore[assignment]
    return obj


def _slug(method: str, path: str) -> str:
    text = f"{method}-{path}".lower()
    for char in "/.{}":
        text = text.replace(char, "-")
    return "-".join(p for p in text.split("-") if p)


def _security(spec: dict, op: dict) -> str:
    schemes = spec.get("components", {}).get("securitySchemes", {})
    names = [name for req in op.get("security", []) for name in req]
    if not names:
        return "none"
    parts = []
    for name in names:
        scheme = schemes.get(name, {})
        about = _cell(scheme.get("description", ""))
        parts.append(f"`{scheme.get('name', name)}` header ({about})")
    return "; ".join(parts)


def openapi_markdown(spec: dict | None = None) -> str:
    spec = spec or yaml.safe_load(OPENAPI.read_text())
    info = spec["info"]
    out = [
        f"# {info['title']}",
        "",
        "!!! note \"Generated\"",
        "    This page is generated from `jupyter_walnut/provider/openapi.yaml` "
        f"(OpenAPI {spec['openapi']}, API version {info['version']}). A running node serves "
        "the same document at `/api/v1/openapi.yaml`.",
        "",
        info.get("description", "").strip(),
        "",
        "Servers: " + ", ".join(f"`{s['url']}`" for s in spec.get("servers", [])),
        "",
        "## Endpoints",
        "",
        "| method | path | summary |",
        "|---|---|---|",
    ]
    ops = [(path, method, item[method]) for path, item in spec["paths"].items()
           for method in METHODS if method in item]
    for path, method, op in ops:
        slug = _slug(method, path)
        out.append(f"| {method.upper()} | [`{path}`](#{slug}) | {_cell(op.get('summary', ''))} |")
    out.append("")
    for path, method, op in ops:
        item = spec["paths"][path]
        slug = _slug(method, path)
        out += [f"### {method.upper()} `{path}` {{#{slug}}}", "", op.get("summary", ""), "",
                f"**Authentication:** {_security(spec, op)}", ""]
        params = [_resolve(spec, p) for p in [*item.get("parameters", []),
                                               *op.get("parameters", [])]]
        if params:
            out += ["**Parameters**", "", "| name | in | type | required |", "|---|---|---|---|"]
            for p in params:
                out.append(f"| `{p['name']}` | {p['in']} | {_cell(_type(p.get('schema', {})))} "
                           f"| {'yes' if p.get('required') else ''} |")
            out.append("")
        body = op.get("requestBody")
        if body:
            for media, content in body.get("content", {}).items():
                out += [f"**Request body** ({media}): {_type(content.get('schema', {}))}", ""]
        out += ["**Responses**", "", "| status | meaning | body |", "|---|---|---|"]
        for status, resp in op.get("responses", {}).items():
            schema = next(iter(resp.get("content", {}).values()), {}).get("schema")
            out.append(f"| {status} | {_cell(resp.get('description', ''))} "
                       f"| {_cell(_type(schema)) if schema else ''} |")
        out.append("")
    out += ["## Schemas", ""]
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        out += [f"### {name} {{#{_anchor(name)}}}", "", *_schema_table(schema)]
    return "\n".join(out) + "\n"


# --- configuration ------------------------------------------------------------------------

# provider.toml: the meaning of each key. The set of keys comes from config.py itself
# (every `_unknown(table, {...}, "prefix.")` call); a key missing here fails the build.
PROVIDER_KEYS = {
    "provider.name": ("required", "Node name shown to renters (a-z, 0-9, `.`, `_`, `-`)."),
    "provider.endpoint": ("`https://127.0.0.1:<listen_port>` (`http://` with TLS off)",
                          "The URL renters reach this node at; put it in `register`."),
    "provider.region": ('`"local"`', "Free-form region label shown in offers."),
    "provider.listen_host": ('`"127.0.0.1"`', "Address the API binds to; `0.0.0.0` to serve "
                             "other machines."),
    "provider.listen_port": ("`8765`", "Port of the API, the gateway proxy and `/metrics`."),
    "provider.runtime": ('`"auto"`', "`auto` (Docker when an engine answers, else local "
                         "processes), `docker` (refuse to start without Docker) or `process`."),
    "shapes[].name": ("required", "Shape name renters pick, unique per node."),
    "shapes[].gpus": ("`0`", "Whole GPUs per session of this shape."),
    "shapes[].cpus": ("required", "CPU cores (a number > 0; fractions allowed)."),
    "shapes[].memory_mb": ("required", "Memory limit in MiB (at least 64)."),
    "shapes[].price_mist_per_second": ("required", "Price, integer MIST per second "
                                       "(1 SUI = 10^9 MIST); a float is refused."),
    "shapes[].disk_mb": ("`10240`", "Workspace allowance in MiB (at least 64); on Docker a "
                         "loop-mounted ext4 image and a bounded `/tmp`: writing past it fails "
                         "inside the session."),
    "network.egress": ('`"internet"`', "What session containers may reach: `internet` (not "
                       "this host, private, shared or link-local ranges, cloud metadata, IPv6) "
                       "or `offline` (nothing)."),
    "slurm.partition": ('`""` (the default partition)', "Partition Walnut's jobs go to."),
    "slurm.account": ('`""`', "Slurm account charged for Walnut's jobs."),
    "slurm.qos": ('`""`', "Quality of service of Walnut's jobs."),
    "slurm.container": ('`""`', "Command prefix running the gateway inside a container "
                        "(e.g. `apptainer exec IMAGE`; `{session_dir}` is replaced). Needed "
                        "to rent to strangers."),
    "slurm.state_dir": ("the provider home's `slurm/`", "Absolute path on a file system the "
                        "nodes share: per-session files and endpoints."),
    "slurm.bind": ('`"0.0.0.0"`', "Address the gateway binds to on its node."),
    "slurm.python": ("the provider's interpreter", "Absolute path of the Python that runs "
                     "the gateway on the nodes."),
    "slurm.shapes": ("`{}`", "Per-shape placement: `[slurm.shapes.NAME]` tables."),
    "slurm.shapes.<name>.partition": ('`""`', "Partition for this shape's jobs."),
    "slurm.shapes.<name>.account": ('`""`', "Account for this shape's jobs."),
    "slurm.shapes.<name>.qos": ('`""`', "QoS for this shape's jobs."),
    "settlement.channel_check_interval_s": ("`5`", "Read each running session's channel on "
                                            "the ledger this often: a close request is claimed "
                                            "at once (below `min_challenge_period_s`)."),
    "settlement.claim_interval_s": ("`600`", "Claim the newest voucher of a long session "
                                    "this often."),
    "images[].name": ("required", "Image name renters ask for (e.g. `python`)."),
    "images[].reference": ("required", "Docker image reference, or `builtin` for the Walnut "
                           "gateway image built on this machine."),
    "images[].description": ('`""`', "Shown in offers."),
    "availability.max_sessions": ("`4`", "Most sessions running at once (at least 1)."),
    "availability.reserved_gpus": ("`[]`", "GPU indices kept for the owner, never rented."),
    "availability.max_session_seconds": ("`86400`", "Longest a session may run (at least 60)."),
    "availability.schedule": ("`[]` (always open)", "Windows when new sessions are accepted "
                              "(see below)."),
    "availability.schedule[].days": ("all days", "List of `mon` ... `sun`."),
    "availability.schedule[].start": ('`"00:00"`', "HH:MM, provider local time."),
    "availability.schedule[].end": ('`"24:00"`', "HH:MM or 24:00; after `start`."),
    "limits.max_body_bytes": ("`1048576`", "Largest API request body (at least 1024)."),
    "limits.signature_window_s": ("`60`", "How far a signed request's timestamp may be off "
                                  "(at least 5)."),
    "tls.mode": ('`"self-signed"`', "`self-signed` (made by `init`), `files` (your own "
                 "certificate) or `off` (plain HTTP, loopback `listen_host` only)."),
    "tls.cert": ('`"tls/cert.pem"`', "Certificate (PEM), relative to the provider home."),
    "tls.key": ('`"tls/key.pem"`', "Private key (PEM), relative to the provider home."),
    "ledger.kind": ('`"local"`', "The settlement ledger; `local` (the embedded SQLite ledger)."),
    "ledger.path": ("`$WALNUT_LEDGER`, else the Walnut home's `ledger.sqlite`",
                    "Local ledger file; share one file with renters on the same machine."),
    "settlement.grace_seconds": ("`30`", "Stop a session whose vouchers fall this many "
                                 "seconds behind its metered time."),
    "settlement.min_prepaid_seconds": ("`60`", "A channel must lock at least this much "
                                       "time at the shape's price."),
    "settlement.min_challenge_period_s": ("`60`", "Shortest challenge period accepted on a "
                                          "renter's channel."),
    "settlement.settle_after_s": ("`15`", "Wait this long after a session ends for the "
                                  "renter's final voucher, then claim."),
}

def _key_names(node: ast.expr) -> list[str]:
    """The keys of an `_unknown` call's set: literals, or names config.py defines
    (`{*_SLURM_PLACEMENT, "bind"}`, `set(SETTLEMENT_KEYS)`)."""
    from jupyter_walnut.provider import config

    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "set":
        return _key_names(node.args[0])
    if isinstance(node, ast.Name):
        return list(getattr(config, node.id))
    keys: list[str] = []
    for element in node.elts:
        keys += _key_names(element.value) if isinstance(element, ast.Starred) \
            else [ast.literal_eval(element)]
    return keys


def provider_toml_keys(source: str | None = None) -> dict[str, list[str]]:
    """{table: [keys]} as config.py accepts them, read from its `_unknown` calls."""
    tree = ast.parse(source if source is not None else CONFIG_PY.read_text())
    tables: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_unknown"):
            continue
        keys = _key_names(node.args[1])  # source order
        where = node.args[2]
        if isinstance(where, ast.Constant):
            table = where.value.rstrip(".")
        elif "price_mist_per_second" in keys:  # prefixes built at run time: list items
            table = "shapes[]"
        elif "reference" in keys:
            table = "images[]"
        elif "start" in keys:
            table = "availability.schedule[]"
        elif "partition" in keys and "shapes" not in keys:
            table = "slurm.shapes.<name>"
        else:
            raise RuntimeError(f"config.py: unrecognised table with keys {keys}")
        tables[table] = keys
    return tables


def provider_toml_markdown() -> str:
    from jupyter_walnut.provider.config import default_config_text

    tables = provider_toml_keys()
    out = ["## provider.toml {#provider-toml}", "",
           "The provider's configuration, at `<provider home>/provider.toml` (`walnut-provider "
           "init` writes one sized to the machine; the home is `~/.walnut/provider`, "
           "`$WALNUT_PROVIDER_HOME` or `--home`). Every value is checked when the node "
           "starts; a wrong one is refused with its key named, e.g. "
           "`shapes[1].price_mist_per_second: must be an integer (MIST), not a float`.", ""]
    missing = []
    for table in tables.get("", []):
        prefix = {"shapes": "shapes[]", "images": "images[]"}.get(table, table)
        heading = f"[[{table}]]" if prefix.endswith("[]") else f"[{table}]"
        rows = []
        for sub in (prefix, *(t for t in tables if t.startswith(prefix + "."))):
            for key in tables.get(sub, []):
                full = f"{sub}.{key}"
                if full not in PROVIDER_KEYS:
                    missing.append(full)
                    continue
                default, meaning = PROVIDER_KEYS[full]
                rows.append(f"| `{full.removeprefix(prefix + '.')}` | {default} | {meaning} |")
        out += [f"### `{heading}`", "", "| key | default | meaning |", "|---|---|---|", *rows,
                ""]
    if missing:
        raise RuntimeError(f"provider.toml keys without documentation: {', '.join(missing)} "
                           "(add them to PROVIDER_KEYS in docs/gen_reference.py)")
    out += ["### The file `init` writes", "",
            "On a machine with one GPU (`gpu-1` appears only when NVML finds GPUs):", "",
            "```toml", default_config_text("my-node", 1, 16, 65536).strip(), "```", ""]
    return "\n".join(out)


def _traits_markdown(cls, intro: str) -> list[str]:
    dynamic = getattr(cls, "_trait_default_generators", {})
    out = [f"## {cls.__name__} {{#{cls.__name__.lower()}}}", "", intro, "",
           "| option | type | default | description |", "|---|---|---|---|"]
    for name, trait in sorted(cls.class_own_traits(config=True).items()):
        default = "computed" if name in dynamic else f"`{trait.default_value_repr()}`"
        kind = type(trait).__name__
        values = getattr(trait, "values", None)
        if values:
            kind += " (" + ", ".join(f"`{v}`" for v in values) + ")"
        out.append(f"| `{cls.__name__}.{name}` | {kind} | {default} | {_cell(trait.help)} |")
    return [*out, ""]


def configuration_markdown() -> str:
    from jupyter_walnut.renter.extension.app import WalnutApp
    from jupyter_walnut.renter.kernel.provisioner import WalnutProvisioner
    from jupyter_walnut.renter.magics import WalnutMagics

    out = ["# Configuration reference", "",
           "!!! note \"Generated\"",
           "    From the traitlets classes and `jupyter_walnut/provider/config.py`.", "",
           "Renter options are [traitlets](https://traitlets.readthedocs.io/) options: set them "
           "on the command line (`jupyter lab --WalnutApp.challenge_period=120`), in "
           "`jupyter_server_config.py` (`c.WalnutApp.providers = [...]`), or for the magics "
           "with `%config WalnutMagics.max_transfer_mb = 500`.", "",
           "Environment: `WALNUT_PROVIDERS` (comma-separated provider URLs), `WALNUT_HOME` "
           "(renter state, default `<jupyter data dir>/walnut`), `WALNUT_LEDGER` (the local "
           "ledger file, default `<walnut home>/ledger.sqlite`), `WALNUT_PROVIDER_HOME` (the "
           "provider home, default `~/.walnut/provider`).", ""]
    out += _traits_markdown(WalnutApp, "The Jupyter Server extension (the `/walnut/` API and "
                            "the JupyterLab panel).")
    out += _traits_markdown(WalnutProvisioner, "The `walnut` kernel provisioner. Walnut writes "
                            "these into each session's kernelspec (`metadata.kernel_provisioner"
                            ".config`); you rarely set them yourself.")
    out += _traits_markdown(WalnutMagics, "The `%walnut` magics (`%load_ext jupyter_walnut`).")
    out.append(provider_toml_markdown())
    return "\n".join(out) + "\n"


# --- contracts, threat model ----------------------------------------------------------------


def contracts_markdown() -> str:
    text = CONTRACTS.read_text()
    note = ("!!! note \"Source\"\n    This page is `contracts/README.md` from the repository; "
            "the Move sources are in `contracts/sources/`.\n\n")
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{note}{rest.lstrip()}"


def pages() -> dict[str, str]:
    out = {"reference/provider-api.md": openapi_markdown(),
           "reference/configuration.md": configuration_markdown(),
           "contracts.md": contracts_markdown()}
    if THREAT_MODEL.exists():
        out["threat-model.md"] = THREAT_MODEL.read_text()
    return out


# --- MkDocs hooks -----------------------------------------------------------------------------


def on_config(config, **kwargs):
    if THREAT_MODEL.exists() and not any(
            isinstance(item, dict) and "Threat model" in item for item in config.nav or []):
        nav = list(config.nav or [])
        nav.insert(len(nav) - 1, {"Threat model": "threat-model.md"})  # before Troubleshooting
        config.nav = nav
    return config


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    for uri, content in pages().items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))
    return files


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python docs/gen_reference.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for uri, content in pages().items():
        path = out / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
