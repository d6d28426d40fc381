"""The image catalog (issue #15): `python`, `scipy` and `pytorch` session images.

Unit tests (no Docker): each flavor's tag hashes its exact pins and its parent's, so changing a
pin changes the tags of that flavor and of the flavors built on it; `image_packages` declares the
pinned versions; a provider.toml naming an unknown flavor is refused with the known ones.

On the default stack (Docker + pinned TLS) a node offers all three images: its status lists each
one with the key versions read from inside the built image (its `walnut.packages` label), equal
to what the pins declare. A `scipy` session imports and uses the data stack; a `pytorch` session
computes with torch and reports the labelled version. The flavors share the python image's
layers, and a second ensure returns the same tag without building anything.

The first run builds the images (about 40 s for scipy and 2 min for pytorch on 2 cores, once the
python image exists); they are cached by content hash afterwards.
"""

from __future__ import annotations

import json

import pytest
from conftest import docker_or_skip, provider_config
from stack import StackNode
from test_container_breakout import Session

from jupyter_walnut.provider import image as image_mod
from jupyter_walnut.provider.config_schema import ConfigError

pytestmark = [pytest.mark.timeout(900)]

FLAVORS = ("python", "scipy", "pytorch")


# --- without Docker ------------------------------------------------------------------------


def pin_of(file: str, dist: str) -> str:
    for line in image_mod.requirements_file(file).read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep and name.lower() == dist:
            return version
    raise AssertionError(f"{dist} is not pinned in {file}")


def test_the_catalog_has_the_three_flavors():
    assert image_mod.FLAVORS == FLAVORS


def test_image_packages_declares_the_pinned_versions():
    python, scipy, torch = (image_mod.image_packages(f) for f in FLAVORS)

    assert python["numpy"] == pin_of("requirements.txt", "numpy")
    assert python["python"] == "3.11.2" and python["cuda"] is None
    assert "pandas" not in python and "torch" not in python
    assert scipy["pandas"] == pin_of("requirements-scipy.txt", "pandas")
    assert scipy["numpy"] == python["numpy"]  # built on the python image
    assert torch["torch"] == pin_of("requirements-pytorch.txt", "torch") == "2.13.0+cpu"
    assert torch["pandas"] == scipy["pandas"] and torch["cuda"] is None


def test_changing_a_pin_changes_the_tags_built_on_it(monkeypatch: pytest.MonkeyPatch):
    before = {f: image_mod.gateway_image_tag(f) for f in FLAVORS}
    assert before["scipy"].startswith("walnut-gateway:scipy-")
    assert len(set(before.values())) == 3
    read = image_mod._read_requirements

    def bumped(file: str, dist: str, version: str):
        def reader(name: str) -> list[str]:
            lines = read(name)
            if name != file:
                return lines
            return [f"{dist}=={version}" if line.startswith(f"{dist}==") else line
                    for line in lines]
        return reader

    monkeypatch.setattr(image_mod, "_read_requirements",
                        bumped("requirements-scipy.txt", "pandas", "3.0.0"))
    after = {f: image_mod.gateway_image_tag(f) for f in FLAVORS}
    assert after["python"] == before["python"]
    assert after["scipy"] != before["scipy"] and after["pytorch"] != before["pytorch"]
    assert image_mod.image_packages("scipy")["pandas"] == "3.0.0"

    monkeypatch.setattr(image_mod, "_read_requirements",
                        bumped("requirements-pytorch.txt", "torch", "2.12.0"))
    after = {f: image_mod.gateway_image_tag(f) for f in FLAVORS}
    assert after["scipy"] == before["scipy"] and after["pytorch"] != before["pytorch"]

    monkeypatch.setattr(image_mod, "_read_requirements",
                        bumped("requirements.txt", "numpy", "2.4.5"))
    after = {f: image_mod.gateway_image_tag(f) for f in FLAVORS}
    assert all(after[f] != before[f] for f in FLAVORS)


@pytest.mark.parametrize("reference,flavor", [
    ("builtin", "python"), ("builtin:python", "python"), ("builtin:scipy", "scipy"),
    ("builtin:pytorch", "pytorch"), ("walnut-gateway:latest", None),
])
def test_builtin_references_name_their_flavor(reference, flavor):
    config = provider_config(images=[{"name": "img", "reference": reference}])
    assert image_mod.builtin_flavor(config.images[0].reference) == flavor


def test_an_unknown_flavor_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError) as err:
        provider_config(images=[{"name": "python", "reference": "builtin"},
                                {"name": "tf", "reference": "builtin:tensorflow"}])
    message = str(err.value)
    assert message.startswith("images[1].reference: unknown image flavor 'tensorflow'")
    assert "python, scipy, pytorch" in message


def test_an_unknown_flavor_is_refused_before_docker_is_asked():
    with pytest.raises(image_mod.ImageBuildError, match="known flavors: python, scipy"):
        image_mod.ensure_gateway_image(client=object(), flavor="tensorflow")


def test_a_process_node_offers_its_own_environment_versions(tmp_path, ledger):
    import numpy

    config = provider_config(provider={"name": "proc", "runtime": "process"},
                             images=[{"name": "scipy", "reference": "builtin:scipy"}])
    node = StackNode(tmp_path / "provider", ledger, config=config, runtime="process", tls=False)
    try:
        offer = node.run(node.client(node.identity).status())
    finally:
        node.stop()
    (entry,) = offer["images"]
    assert entry["flavor"] == "scipy" and "pandas" in entry["description"]
    assert entry["packages"]["numpy"] == numpy.__version__  # what its sessions import


# --- on the default stack -----------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_client():
    docker_or_skip()
    import docker

    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def tags(docker_client) -> dict[str, str]:
    # minutes the first time (scipy about 40 s, pytorch about 2 min), then cached
    return {f: image_mod.ensure_gateway_image(docker_client, progress=print, flavor=f)
            for f in FLAVORS}


@pytest.fixture(scope="module")
def node(tags, tmp_path_factory):
    from jupyter_walnut.ledger import LocalLedger

    tmp = tmp_path_factory.mktemp("catalog")
    config = provider_config(
        provider={"name": "catalog-node", "runtime": "docker"},
        shapes=[{"name": "cpu-small", "gpus": 0, "cpus": 1, "memory_mb": 2048,
                 "price_per_second_mist": 1}],
        images=[{"name": f, "reference": f"builtin:{f}"} for f in FLAVORS],
        settlement={"grace_s": 3600})  # no vouchers here: keep sessions up
    ledger = LocalLedger(tmp / "ledger.sqlite")
    stack = StackNode(tmp / "provider", ledger, config=config, runtime="docker")
    try:
        yield stack
    finally:
        stack.stop()
        ledger.close()


def label_of(docker_client, tag: str) -> dict:
    return json.loads(docker_client.images.get(tag).labels["walnut.packages"])


def test_the_offer_lists_each_image_with_the_versions_inside_it(node, tags, docker_client):
    offer = node.run(node.client(node.identity).status())

    entries = {e["name"]: e for e in offer["images"]}
    assert list(entries) == list(FLAVORS)
    for flavor in FLAVORS:
        entry = entries[flavor]
        assert entry["flavor"] == flavor
        assert entry["description"] == image_mod.flavor_description(flavor)
        assert entry["packages"] == label_of(docker_client, tags[flavor])
        assert entry["packages"] == image_mod.image_packages(flavor)
    assert entries["pytorch"]["packages"]["torch"] == "2.13.0+cpu"
    assert entries["pytorch"]["packages"]["cuda"] is None
    assert "torchvision" in entries["pytorch"]["description"]  # says it is not there
    assert "pandas" in entries["scipy"]["packages"] and "pandas" not in entries["python"][
        "packages"]


SCIPY_CELL = r"""
import io, json
import numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
import scipy.stats, sklearn.linear_model, statsmodels.api as sm, ipywidgets
import matplotlib
matplotlib.use("Agg")
import seaborn as sns

rng = np.random.default_rng(0)
df = pd.DataFrame({"x": rng.normal(size=200), "g": rng.integers(0, 3, 200)})
df["y"] = 3 * df["x"] + 1 + rng.normal(scale=0.1, size=200)
buf = io.BytesIO()
pq.write_table(pa.Table.from_pandas(df), buf)
back = pq.read_table(io.BytesIO(buf.getvalue())).to_pandas()
fit = sm.OLS(back["y"], sm.add_constant(back["x"])).fit()
lr = sklearn.linear_model.LinearRegression().fit(back[["x"]], back["y"])
ax = sns.histplot(back, x="x", hue="g")
print(json.dumps({
    "rows": len(back), "groups": int(back.groupby("g").size().count()),
    "ols_slope": round(float(fit.params["x"]), 1), "sk_slope": round(float(lr.coef_[0]), 1),
    "ttest_p": float(scipy.stats.ttest_1samp(back["x"], 5).pvalue),
    "artists": len(ax.patches) > 0, "slider": ipywidgets.IntSlider(value=7).value,
    "pandas": pd.__version__,
}))
"""


def test_a_scipy_session_runs_the_data_stack(node):
    session = Session(node, image="scipy")
    try:
        report = session.probe(SCIPY_CELL, timeout=240)
    finally:
        session.stop()

    assert report["rows"] == 200 and report["groups"] == 3
    assert report["ols_slope"] == report["sk_slope"] == 3.0
    assert report["ttest_p"] < 1e-6 and report["artists"] and report["slider"] == 7
    assert report["pandas"] == image_mod.image_packages("scipy")["pandas"]


TORCH_CELL = r"""
import json, torch
torch.manual_seed(0)
x = torch.randn(256, 3)
y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
w = torch.zeros(3, 1, requires_grad=True)
opt = torch.optim.SGD([w], lr=0.1)
for _ in range(300):
    opt.zero_grad()
    loss = ((x @ w - y) ** 2).mean()
    loss.backward()
    opt.step()
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "w": [round(v, 2) for v in w.detach().flatten().tolist()]}))
"""


def test_a_pytorch_session_computes_with_the_labelled_torch(node, tags, docker_client):
    session = Session(node, image="pytorch")
    try:
        report = session.probe(TORCH_CELL, timeout=240)
    finally:
        session.stop()

    label = label_of(docker_client, tags["pytorch"])
    assert report["torch"] == label["torch"] == "2.13.0+cpu"
    assert report["cuda"] is None
    assert report["w"] == [1.0, -2.0, 0.5]


def test_the_flavors_share_the_python_image_layers(tags, docker_client):
    layers = {f: docker_client.images.get(tags[f]).attrs["RootFS"]["Layers"] for f in FLAVORS}
    base = docker_client.images.get(image_mod.packages_image_tag("python")).attrs["RootFS"][
        "Layers"]
    scipy_packages = docker_client.images.get(image_mod.packages_image_tag("scipy")).attrs[
        "RootFS"]["Layers"]
    assert layers["scipy"][:len(base)] == base
    assert layers["pytorch"][:len(scipy_packages)] == scipy_packages
    assert len(layers["pytorch"]) == len(scipy_packages) + 2  # its packages, the sources


def test_a_second_ensure_builds_nothing(tags, docker_client):
    for flavor in FLAVORS:
        steps: list[str] = []
        assert image_mod.ensure_gateway_image(docker_client, progress=steps.append,
                                              flavor=flavor) == tags[flavor]
        assert steps == []  # any build step reports progress


def test_the_cli_prints_every_flavor_tag_without_building(capsys):
    assert image_mod.main(["--all", "--tag-only"]) == 0
    assert capsys.readouterr().out.split() == [image_mod.gateway_image_tag(f) for f in FLAVORS]
    with pytest.raises(SystemExit):  # argparse names the choices
        image_mod.main(["--flavor", "tensorflow", "--tag-only"])
    assert "choose from 'python', 'scipy', 'pytorch'" in capsys.readouterr().err
