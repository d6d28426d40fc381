"""provider.toml has one declaration (jupyter_walnut/provider/config_schema.py): the file
`init` writes holds exactly its defaults, the configuration reference documents every key of
it, a value out of its bounds is refused naming the key and the bound, and a file with the
old key names still loads to the same values."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from jupyter_walnut.provider.config import (
    ConfigError,
    DeprecatedKeyWarning,
    default_config_text,
    load_config,
    parse_config,
    slurm_config_text,
)
from jupyter_walnut.provider.config_schema import ROOT, Section, read
from jupyter_walnut.provider.runtimes.slurm import SlurmSettings
from jupyter_walnut.provider.settlement import SettlementPolicy

CLI = [sys.executable, "-m", "jupyter_walnut.provider.cli"]
OLD_TOML = Path(__file__).parent / "data" / "provider_toml_440d320.toml"
GEN_REFERENCE = Path(__file__).parent.parent / "docs" / "gen_reference.py"
SHAPE = {"name": "cpu-small", "cpus": 1, "memory_mb": 512, "price_per_second_mist": 10}
MINIMAL = {"provider": {"name": "n"}, "shapes": [SHAPE],
           "images": [{"name": "python", "reference": "builtin"}]}


def run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "WALNUT_LEDGER": str(tmp_path / "ledger.sqlite")}


def keys(section: Section, prefix: str = "") -> list[str]:
    """Every key under `section` as the reference names it (`schedule[].days`)."""
    out = []
    for f in section.fields:
        out.append(prefix + f.name)
        if f.section is not None:
            nested = {"table": ".", "array": "[].", "map": ".<name>."}[f.kind]
            out += keys(f.section, prefix + f.name + nested)
    return out


def schema_defaults(section: Section) -> dict:
    return {f.name: schema_defaults(f.section) if f.kind == "table" else f.default
            for f in section.fields}


def given_by_init(values: dict) -> dict:
    """What `init` writes from the machine and its flags rather than from the schema."""
    return {"provider": {k: values["provider"][k] for k in ("name", "endpoint", "listen_port")},
            "shapes": values["shapes"], "images": values["images"]}


def test_the_file_init_writes_holds_exactly_the_schema_defaults(tmp_path, env):
    home = tmp_path / "prov"
    done = run("--home", str(home), "init", "--name", "my-node", "--port", "9000", env=env)
    assert done.returncode == 0, done.stderr
    texts = [(home / "provider.toml").read_text(), default_config_text("gpu-node", 2, 16, 65536)]
    for text in texts:
        values = read(ROOT, tomllib.loads(text))
        expected = schema_defaults(ROOT)
        for table in ("provider", "shapes", "images"):
            given = given_by_init(values)[table]
            expected[table] = {**expected[table], **given} if table == "provider" else given
        assert values == expected
        raw = tomllib.loads(text)  # every key with a default is written out, not left out
        for table in (f for f in ROOT.fields if f.kind == "table" and f.name != "slurm"):
            written = {f.name for f in table.section.fields
                       if f.section is None and f.default not in (None, "")}
            assert set(raw[table.name]) == written | set(given_by_init(values).get(
                table.name, {})), table.name
        # and the node built from it is the one built from only what init had to say
        assert parse_config(tomllib.loads(text)) == parse_config(given_by_init(values))
    assert 'name = "my-node"' in texts[0] and "listen_port = 9000" in texts[0]
    assert "# Longest a session may run, in seconds.\nmax_session_s = 86400" in texts[0]


def test_the_slurm_template_holds_the_schema_defaults_but_its_partition():
    nodes = [{"state": "idle", "gpus": 2, "cpus": 8, "memory_mb": 16000, "partition": "gpu",
              "default_partition": True}]
    values = read(ROOT, tomllib.loads(slurm_config_text("n", nodes)))
    assert values["provider"]["runtime"] == "slurm"
    assert values["slurm"] == {**schema_defaults(ROOT)["slurm"], "partition": "gpu"}
    assert values["settlement"] == schema_defaults(ROOT)["settlement"]


def test_runtime_defaults_agree_with_the_schema():
    """SettlementPolicy and SlurmSettings keep defaults of their own for code that builds
    them directly; they must be the schema's."""
    settlement = schema_defaults(ROOT)["settlement"]
    policy = SettlementPolicy()
    assert policy.grace_seconds == settlement.pop("grace_s")
    assert policy.min_prepaid_seconds == settlement.pop("min_prepaid_s")
    assert all(getattr(policy, key) == value for key, value in settlement.items())
    assert SlurmSettings() == SlurmSettings(**schema_defaults(ROOT)["slurm"])


def test_the_reference_documents_every_key_of_the_schema():
    spec = importlib.util.spec_from_file_location("gen_reference", GEN_REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = module.provider_toml_markdown()
    for table in ROOT.fields:
        assert f"### `[{table.name}]`" in page or f"### `[[{table.name}]]`" in page
        for key in keys(table.section):
            assert f"| `{key}`" in page, key
    assert "| `grace_s` (was `grace_seconds`) | integer >= 0 | `30` |" in page


@pytest.mark.parametrize("table, key, value, message", [
    ("availability", "max_sessions", 0, "availability.max_sessions: must be an integer >= 1"),
    ("availability", "max_session_s", 59,
     "availability.max_session_s: must be an integer >= 60"),
    ("limits", "signature_window_s", 4, "limits.signature_window_s: must be an integer >= 5"),
    ("limits", "max_body_bytes", 1023, "limits.max_body_bytes: must be an integer >= 1024"),
    ("provider", "listen_port", 65536, "provider.listen_port: must be <= 65535"),
    ("settlement", "claim_interval_s", 0, "settlement.claim_interval_s: must be an integer >= 1"),
    ("network", "egress", "lan", "network.egress: must be one of internet, offline"),
    ("provider", "runtime", "vm", "provider.runtime: must be one of auto, docker, process, slurm"),
    ("shapes", "cpus", 0, "shapes[0].cpus: must be a number > 0 and <= 1024"),
    ("shapes", "cpus", 1025, "shapes[0].cpus: must be a number > 0 and <= 1024"),
    ("shapes", "memory_mb", 63, "shapes[0].memory_mb: must be an integer >= 64"),
    ("shapes", "price_per_second_mist", 0.5,
     "shapes[0].price_per_second_mist: must be an integer (MIST), not a float"),
    ("shapes", "price_mist_per_second", -1,  # an old name is named as written
     "shapes[0].price_mist_per_second: must be an integer >= 0"),
])
def test_a_value_out_of_bounds_is_refused_naming_the_key_and_the_bound(table, key, value,
                                                                       message):
    data = {**MINIMAL, table: [{**SHAPE, key: value}] if table == "shapes" else
            {**MINIMAL.get(table, {}), key: value}}
    if key == "price_mist_per_second":
        del data["shapes"][0]["price_per_second_mist"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecatedKeyWarning)
        with pytest.raises(ConfigError) as err:
            parse_config(data)
    assert str(err.value) == message


def test_the_cli_refuses_an_out_of_bounds_value_in_one_line(tmp_path, env):
    home = tmp_path / "prov"
    assert run("--home", str(home), "init", env=env).returncode == 0
    config = home / "provider.toml"
    config.write_text(config.read_text().replace("max_sessions = 4", "max_sessions = 0"))
    done = run("--home", str(home), "serve", env=env)
    assert done.returncode == 2
    assert done.stderr == "walnut-provider: availability.max_sessions: must be an integer >= 1\n"


def test_a_file_with_the_old_key_names_loads_to_the_same_values(tmp_path):
    with pytest.warns(DeprecatedKeyWarning) as caught:
        old = load_config(OLD_TOML)
    assert sorted(str(w.message) for w in caught) == [
        "availability.max_session_seconds is deprecated: rename it to "
        "availability.max_session_s",
        "settlement.grace_seconds is deprecated: rename it to settlement.grace_s",
        "settlement.min_prepaid_seconds is deprecated: rename it to settlement.min_prepaid_s",
        "shapes[0].price_mist_per_second is deprecated: rename it to "
        "shapes[0].price_per_second_mist",
        "shapes[1].price_mist_per_second is deprecated: rename it to "
        "shapes[1].price_per_second_mist",
    ]
    new = parse_config(tomllib.loads(default_config_text("old-node", 1, 16, 65536)))
    assert old == new
    assert old.shapes[1].price_mist_per_second == 50000
    assert old.settlement.grace_seconds == 30 and old.availability.max_session_seconds == 86400


def test_the_cli_names_the_new_key_of_an_old_one(tmp_path, env):
    home = tmp_path / "prov"
    assert run("--home", str(home), "init", env=env).returncode == 0
    (home / "provider.toml").write_text(OLD_TOML.read_text())
    done = run("--home", str(home), "status", "--url", "http://127.0.0.1:1", env=env)
    assert done.returncode == 1  # loaded; nothing listens on port 1
    warned = [line for line in done.stderr.splitlines() if "deprecated" in line]
    assert "walnut-provider: warning: settlement.grace_seconds is deprecated: rename it to " \
           "settlement.grace_s" in warned
    assert len(warned) == 5


def test_an_old_and_a_new_name_together_are_refused():
    data = {**MINIMAL, "settlement": {"grace_s": 10, "grace_seconds": 20}}
    with pytest.raises(ConfigError, match="settlement.grace_seconds: the old name of "
                                          "settlement.grace_s, which is also given"):
        parse_config(data)
