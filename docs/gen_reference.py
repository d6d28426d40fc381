"""Reference pages generated from the code, so they cannot drift from it.

- reference/provider-api.md   from jupyter_walnut/provider/openapi.yaml
- reference/configuration.md  from the traitlets classes (WalnutApp, WalnutProvisioner,
                              WalnutMagics) and provider.toml's declaration
                              (jupyter_walnut/provider/config_schema.py)
- contracts.md                from contracts/README.md
- threat-model.md             docs/threat-model.md, when that file exists

Used as an MkDocs hook (`hooks:` in docs/mkdocs.yml): the pages are added at build time and
never written into the source tree. Also runnable on its own:
`python docs/gen_reference.py OUTDIR` writes the same markdown files under OUTDIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = ROOT / "jupyter_walnut" / "provider" / "openapi.yaml"
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


def _kind_doc(f) -> str:
    """A provider.toml key's type with its bounds and allowed values, from the schema."""
    if f.kind == "int":
        return "integer " + (f"{f.minimum} to {f.maximum}" if f.maximum is not None
                             else f">= {f.minimum or 0}") + (" (MIST)" if f.unit else "")
    if f.kind == "number":
        return f"number {'>' if f.above else '>='} {f.minimum or 0}" + \
            (f", <= {f.maximum}" if f.maximum is not None else "")
    if f.kind == "list":
        what = ", ".join(f"`{c}`" for c in f.choices) if f.choices else \
            (f"integers >= {f.minimum}" if f.items == "int" else "strings")
        return f"list of {what}" + (" (not empty)" if f.min_items else "")
    if f.kind == "str" and f.choices:
        return "one of " + ", ".join(f"`{c}`" for c in f.choices)
    if f.kind == "str" and f.check is not None:
        return "absolute path"
    return {"str": "string", "bool": "true or false", "table": "table", "array": "array of tables",
            "map": "tables by name"}[f.kind]


def _default_doc(f) -> str:
    from jupyter_walnut.provider.config_schema import toml_value

    if f.default_doc:
        return f.default_doc
    if f.required:
        return "required"
    return f"`{toml_value(f.default)}`" if f.kind not in ("table", "map") else "`{}`"


def _rows(section, prefix: str) -> list[str]:
    """A table's keys as rows, nested tables' keys after it (`schedule[].days`)."""
    rows, nested = [], []
    for f in section.fields:
        key = prefix + f.name
        old = "".join(f" (was `{o}`)" for o in f.old)
        rows.append(f"| `{key}`{old} | {_cell(_kind_doc(f))} | {_cell(_default_doc(f))} "
                    f"| {_cell(f.help)} |")
        if f.section is not None:
            nested.append((f.section, key + {"array": "[].", "map": ".<name>."}[f.kind]))
    for sub, sub_prefix in nested:
        rows += _rows(sub, sub_prefix)
    return rows


def provider_toml_markdown() -> str:
    from jupyter_walnut.provider.config import default_config_text
    from jupyter_walnut.provider.config_schema import ROOT

    out = ["## provider.toml {#provider-toml}", "",
           "The provider's configuration, at `<provider home>/provider.toml` (`walnut-provider "
           "init` writes one sized to the machine; the home is `~/.walnut/provider`, "
           "`$WALNUT_PROVIDER_HOME` or `--home`). Every value is checked when the node "
           "starts; a wrong one is refused with its key named, e.g. "
           "`shapes[1].price_per_second_mist: must be an integer (MIST), not a float`.", "",
           "Units are suffixes: `_s` seconds, `_mb` MiB, `_bytes` bytes, `_mist` MIST "
           "(1 SUI = 10^9 MIST). A key's old name (\"was\") still loads, with a warning "
           "naming the new one.", ""]
    for table in ROOT.fields:
        heading = f"[[{table.name}]]" if table.kind == "array" else f"[{table.name}]"
        out += [f"### `{heading}`", "", _cell(table.help), "",
                "| key | type | default | meaning |", "|---|---|---|---|",
                *_rows(table.section, ""), ""]
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
    from jupyter_walnut.renter.jobs.manager import JobManager
    from jupyter_walnut.renter.kernel.provisioner import WalnutProvisioner
    from jupyter_walnut.renter.magics import WalnutMagics
    from jupyter_walnut.renter.manager import RenterManager
    from jupyter_walnut.renter.payments import RenterPayments

    out = ["# Configuration reference", "",
           "!!! note \"Generated\"",
           "    From the traitlets classes and `jupyter_walnut/provider/config_schema.py`.", "",
           "Renter options are [traitlets](https://traitlets.readthedocs.io/) options: set them "
           "on the command line (`jupyter lab --WalnutApp.challenge_period=120`), in "
           "`jupyter_server_config.py` (`c.WalnutApp.providers = [...]`), or for the magics "
           "with `%config WalnutMagics.max_transfer_mb = 500`.", "",
           "Environment: `WALNUT_PROVIDERS` (comma-separated provider URLs), `WALNUT_HOME` "
           "(renter state, default `<jupyter data dir>/walnut`), `WALNUT_LEDGER` (the local "
           "ledger file, default `<walnut home>/ledger.sqlite`), `WALNUT_PROVIDER_HOME` (the "
           "provider home, default `~/.walnut/provider`), `WALNUT_SUI_RPC_URL` and "
           "`WALNUT_SUI_PACKAGE` (defaults of `WalnutApp.sui_rpc_url` and `sui_package_id`).",
           ""]
    out += _traits_markdown(WalnutApp, "The Jupyter Server extension (the `/walnut/` API and "
                            "the JupyterLab panel). `ledger_class = \"sui\"` with `sui_rpc_url` "
                            "and `sui_package_id` settles on Sui "
                            "([choosing the ledger](../architecture.md#choosing-the-ledger)).")
    out += _traits_markdown(RenterManager, "The server's sessions, made by WalnutApp "
                            "(`c.RenterManager.<option>`).")
    out += _traits_markdown(RenterPayments, "The renter's side of payment channels "
                            "(`c.RenterPayments.<option>`).")
    out += _traits_markdown(JobManager, "Batch jobs (`c.JobManager.<option>`).")
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
