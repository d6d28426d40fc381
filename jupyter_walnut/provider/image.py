"""Build the session gateway images where no container registry can be reached.

Production providers build `kernel_gateway/image/Dockerfile` (CUDA base, `--build-arg
FLAVOR=...`) as usual. Here (this machine, CI, the offline demo) nothing can be pulled, so the
images are made from Debian's own packages and wheels downloaded on the host. Three flavors:

- `python`: Jupyter's kernel stack with numpy, scipy, scikit-learn, matplotlib
  (kernel_gateway/image/requirements.txt);
- `scipy`: python + pandas, pyarrow, seaborn, statsmodels, ipywidgets (requirements-scipy.txt);
- `pytorch`: scipy + torch's CPU wheel (requirements-pytorch.txt; torchvision only in the CUDA
  image of the Dockerfile: its wheels need libtorch_cuda.so).

Images, each one layer on the one before, so the flavors share their layers:

1. `walnut-gateway-base:<hash>` (python): `debootstrap --variant=minbase` bookworm with python3,
   a virtualenv at /opt/walnut with the wheels of requirements.txt installed offline, a user
   `walnut` (uid 1000, home /home/walnut/work), then `docker import` with the image config;
2. `walnut-gateway-base:<flavor>-<hash>`: the parent flavor's packages image plus the flavor's
   wheels, installed by `pip install --no-index` in a container without network that sees the
   wheels through a read-only bind mount (so no copy of a wheel stays in a layer), committed;
3. `walnut-gateway:<hash>` (python) or `walnut-gateway:<flavor>-<hash>`: the packages image plus
   the `walnut_gateway` sources (a COPY-only build), labelled `walnut.packages` with the key
   versions read from inside the image, so a source change rebuilds in seconds.

Each tag's hash covers every input of that image (recipe, Debian packages, exact pins, sources).
The debootstrapped root fs (as a tar) and the wheels (per flavor) are cached under
~/.cache/walnut/ so a rebuild does not download them again.

    python -m jupyter_walnut.provider.image                   # python: build when needed, print tag
    python -m jupyter_walnut.provider.image --flavor scipy    # or --all
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata as md
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from .runtimes.base import GATEWAY_CONTAINER_PORT, RuntimeError_

# Bump when the steps below change in a way that changes the image.
RECIPE_VERSION = "1"
SUITE = "bookworm"
TARGET_PYTHON = "3.11.2"  # bookworm's python3: wheels must install on exactly this version
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "any")
DEB_PACKAGES = ("python3", "python3-venv", "ca-certificates")
IMAGE_REPO = "walnut-gateway"
BASE_REPO = "walnut-gateway-base"
VENV = "/opt/walnut"
SITE_PACKAGES = f"{VENV}/lib/python3.11/site-packages"
HOME = "/home/walnut/work"
UID = 1000
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
IMAGE_CHANGES = [
    "USER walnut",
    f"WORKDIR {HOME}",
    f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"ENV HOME={HOME}",
    "ENV PYTHONUNBUFFERED=1",
    "ENV JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime",
    "ENV WALNUT_GATEWAY_IP=0.0.0.0",
    f"ENV WALNUT_GATEWAY_PORT={GATEWAY_CONTAINER_PORT}",
    f'CMD ["{VENV}/bin/python", "-m", "walnut_gateway"]',
    f"EXPOSE {GATEWAY_CONTAINER_PORT}",
]
# Only the sources go on top of the base image: no RUN, so the build needs no network.
SOURCE_DOCKERFILE = f"ARG BASE\nFROM $BASE\nCOPY walnut_gateway {SITE_PACKAGES}/walnut_gateway\n"
# Bump when the flavor layer's install step or the label below change.
FLAVOR_RECIPE = "1"
PACKAGES_LABEL = "walnut.packages"
WHEELS_MOUNT = "/tmp/walnut-wheels"
# In the flavor layer: install the flavor's wheels offline, then drop the test suites that the
# new packages ship (pandas, scipy, statsmodels, sympy...: tens of MB nobody imports).
FLAVOR_INSTALL = (
    f"set -e; cd {SITE_PACKAGES}; ls -1 > /tmp/before; "
    f"{VENV}/bin/pip install --no-index --no-cache-dir --disable-pip-version-check "
    f"--find-links {WHEELS_MOUNT} -r {WHEELS_MOUNT}/requirements.txt; "
    "ls -1 | grep -vxFf /tmp/before | while read -r d; do "
    "[ -d \"$d\" ] && find \"$d\" -depth -type d -name tests -exec rm -rf {} +; done; "
    "rm -f /tmp/before"
)
# The key versions a renter filters offers by: label name -> distribution name.
KEY_PACKAGES = {"numpy": "numpy", "pandas": "pandas", "scipy": "scipy", "sklearn": "scikit-learn",
                "matplotlib": "matplotlib", "torch": "torch", "torchvision": "torchvision"}
# Run inside a built image: imports every key package present (a broken install fails the
# build here, not in a renter's session) and prints the `walnut.packages` label's JSON.
PROBE = f"""
import importlib, importlib.metadata as md, json, platform, sys
keys = {KEY_PACKAGES!r}
out = {{"python": platform.python_version()}}
for key, dist in keys.items():
    try:
        out[key] = md.version(dist)
    except md.PackageNotFoundError:
        continue
    importlib.import_module(key)
for extra in sys.argv[1:]:
    importlib.import_module(extra)
out["cuda"] = None
if "torch" in out:
    import torch
    out["cuda"] = torch.version.cuda
print(json.dumps(out, sort_keys=True))
"""


@dataclass(frozen=True)
class Flavor:
    name: str
    parent: str | None  # the flavor whose image this one's packages go on top of
    requirements: str  # file name in kernel_gateway/image/
    description: str
    imports: tuple[str, ...] = ()  # also imported by the build's probe


_FLAVORS = (
    Flavor("python", None, "requirements.txt",
           "Python 3.11 with Jupyter's kernel, numpy, scipy, scikit-learn and matplotlib"),
    Flavor("scipy", "python", "requirements-scipy.txt",
           "python + pandas, pyarrow, seaborn, statsmodels and ipywidgets",
           ("pandas", "pyarrow", "seaborn", "statsmodels.api", "ipywidgets")),
    Flavor("pytorch", "scipy", "requirements-pytorch.txt",
           "scipy + PyTorch (CPU build; no torchvision: GPU nodes build the CUDA image with "
           "torch and torchvision from kernel_gateway/image/Dockerfile)",
           ("torch",)),
)
FLAVORS: tuple[str, ...] = tuple(f.name for f in _FLAVORS)
_BY_NAME = {f.name: f for f in _FLAVORS}

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError_):
    """The gateway image could not be built; the message says what is missing."""


# --- inputs -------------------------------------------------------------------------------


def gateway_sources() -> Path:
    """The `walnut_gateway` package directory (source tree or installed wheel)."""
    spec = importlib.util.find_spec("walnut_gateway")
    if spec is None or not spec.submodule_search_locations:
        raise ImageBuildError("the walnut_gateway package is not installed with jupyter-walnut")
    return Path(next(iter(spec.submodule_search_locations)))


def get_flavor(name: str) -> Flavor:
    """The flavor called `name`; ImageBuildError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ImageBuildError(
            f"unknown image flavor {name!r}; known flavors: {', '.join(FLAVORS)}") from None


def builtin_flavor(reference: str) -> str | None:
    """`builtin` -> python, `builtin:<flavor>` -> flavor, anything else (a Docker reference)
    -> None. An unknown flavor is an ImageBuildError naming the known ones."""
    if reference == "builtin":
        return "python"
    if not reference.startswith("builtin:"):
        return None
    return get_flavor(reference.partition(":")[2]).name


def requirements_file(name: str = "requirements.txt") -> Path:
    """A file of kernel_gateway/image/ (the wheel ships them as jupyter_walnut/_image)."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[2] / "kernel_gateway" / "image" / name,
        here.parents[1] / "_image" / name,
    ):
        if candidate.is_file():
            return candidate
    raise ImageBuildError(f"kernel_gateway/image/{name} is missing")


def _source_files() -> list[tuple[str, bytes]]:
    root = gateway_sources()
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((path.relative_to(root).as_posix(), path.read_bytes()))
    return files


def _read_requirements(name: str) -> list[str]:
    lines = requirements_file(name).read_text().splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def _requirements() -> list[str]:
    """The python flavor's (the base image's) requirements."""
    return _read_requirements("requirements.txt")


def _flavor_requirements(name: str) -> list[str]:
    """The pins a flavor adds on top of its parent's image."""
    f = get_flavor(name)
    return _requirements() if f.parent is None else _read_requirements(f.requirements)


def _chain(name: str) -> list[Flavor]:
    """The flavor and its ancestors, base first."""
    chain = [get_flavor(name)]
    while chain[0].parent is not None:
        chain.insert(0, get_flavor(chain[0].parent))
    return chain


def _pins(name: str) -> dict[str, str]:
    """Canonical distribution name -> exact version, over the flavor's whole chain."""
    pins: dict[str, str] = {}
    for f in _chain(name):
        for req in _flavor_requirements(f.name):
            dist, sep, version = req.partition("==")
            if not sep or not version.strip():
                raise ImageBuildError(
                    f"{f.requirements}: {req!r} is not an exact pin (name==version)")
            pins[_canonical(dist)] = version.strip()
    return pins


def _canonical(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist.split("[", 1)[0]).strip().lower()


def image_packages(name: str = "python") -> dict[str, str | None]:
    """The key versions a flavor declares (from its exact pins), without Docker: the same keys
    and values as the `walnut.packages` label of its built image."""
    pins = _pins(name)
    out: dict[str, str | None] = {"python": TARGET_PYTHON}
    for key, dist in KEY_PACKAGES.items():
        if _canonical(dist) in pins:
            out[key] = pins[_canonical(dist)]
    out["cuda"] = None  # the offline builds are CPU builds
    return out


def local_packages() -> dict[str, str | None]:
    """The same keys for the Python environment this process runs in (the process runtime's
    sessions use it); read from the installed metadata, nothing is imported."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in KEY_PACKAGES.items():
        with contextlib.suppress(md.PackageNotFoundError):
            out[key] = md.version(dist)
    out["cuda"] = None
    return out


def flavor_description(name: str) -> str:
    return get_flavor(name).description


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:12]


def base_hash() -> str:
    """Covers everything in the base image: recipe, Debian packages, Python target, wheels."""
    return _digest(RECIPE_VERSION, SUITE, DEB_PACKAGES, TARGET_PYTHON, PLATFORMS,
                   _requirements(), IMAGE_CHANGES, UID, HOME)


def packages_hash(name: str = "python") -> str:
    """Covers a flavor's packages image: its parent's hash plus its own recipe and pins."""
    f = get_flavor(name)
    if f.parent is None:
        return base_hash()
    return _digest(packages_hash(f.parent), FLAVOR_RECIPE, f.name, FLAVOR_INSTALL,
                   _flavor_requirements(f.name), IMAGE_CHANGES)


def _tag(repo: str, name: str, digest: str) -> str:
    return f"{repo}:{digest}" if name == "python" else f"{repo}:{name}-{digest}"


def packages_image_tag(name: str = "python") -> str:
    """walnut-gateway-base:<hash12> (python) or walnut-gateway-base:<flavor>-<hash12>."""
    return _tag(BASE_REPO, name, packages_hash(name))


def gateway_image_tag(name: str = "python") -> str:
    """The tag the current inputs produce: walnut-gateway:<hash12> for the python flavor,
    walnut-gateway:<flavor>-<hash12> for the others."""
    digest = _digest(packages_hash(name), SOURCE_DOCKERFILE, _source_files(), FLAVOR_RECIPE,
                     PACKAGES_LABEL, PROBE, get_flavor(name).imports)
    return _tag(IMAGE_REPO, name, digest)


def cache_dir() -> Path:
    if os.environ.get("WALNUT_CACHE_DIR"):
        return Path(os.environ["WALNUT_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "walnut"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (never hard-coded)."""
    if os.environ.get("WALNUT_DEBIAN_MIRROR"):
        return os.environ["WALNUT_DEBIAN_MIRROR"]
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.is_file():
        for stanza in re.split(r"\n\s*\n", deb822.read_text()):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if SUITE in fields.get("suites", []) and fields.get("uris"):
                return fields["uris"][0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                return parts[1]
    raise ImageBuildError(
        "no Debian mirror found in /etc/apt/sources.list.d/debian.sources; "
        "set WALNUT_DEBIAN_MIRROR"
    )


# --- helpers ------------------------------------------------------------------------------


def _quiet(_: str) -> None:
    pass


def _run(cmd: list[str], progress: Progress, label: str, *, env: dict[str, str] | None = None,
         heartbeat: float = 5.0) -> None:
    """Run a command; pass a line of its output on every few seconds so a user sees it move."""
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace", env=env)
    except OSError as exc:
        raise ImageBuildError(f"{label}: could not run {cmd[0]}: {exc}") from exc
    tail: deque[str] = deque(maxlen=25)
    last = time.monotonic()
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        if not line:
            continue
        tail.append(line)
        now = time.monotonic()
        if now - last >= heartbeat:
            progress(f"  {label}: {line[:160]}")
            last = now
    code = proc.wait()
    if code != 0:
        raise ImageBuildError(f"{label} failed (exit code {code}):\n" + "\n".join(tail))


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """One build at a time on this machine (tests, demo and CLI may race)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _image_exists(client, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"the Docker engine is not reachable: {exc}") from exc


def _check_tools() -> None:
    missing = [tool for tool in ("debootstrap", "chroot", "tar") if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(
            f"building the gateway image offline needs {', '.join(missing)} "
            "(apt-get install debootstrap), or build kernel_gateway/image/Dockerfile"
        )
    if os.geteuid() != 0:
        raise ImageBuildError("building the gateway image offline needs root (debootstrap)")
    if importlib.util.find_spec("pip") is None:
        raise ImageBuildError(f"{sys.executable} has no pip to download the image's wheels")


# --- steps --------------------------------------------------------------------------------


def _rootfs(rootfs: Path, cache: Path, progress: Progress) -> None:
    """Debootstrap into `rootfs`, or unpack the cached tar of an earlier debootstrap."""
    tar_path = cache / f"rootfs-{SUITE}-{_digest(RECIPE_VERSION, SUITE, DEB_PACKAGES)}.tar"
    if tar_path.is_file():
        progress(f"unpacking the cached Debian {SUITE} root fs ({tar_path.name})")
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(tar_path)],
             progress, "tar")
        return
    mirror = debian_mirror()
    progress(f"debootstrap: Debian {SUITE} minbase + {', '.join(DEB_PACKAGES)} (about a minute)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(DEB_PACKAGES)}",
          SUITE, str(rootfs), mirror], progress, "debootstrap")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for child in (rootfs / junk).glob("*"):
            if child.is_file():
                child.unlink()
    progress(f"caching the root fs as {tar_path}")
    partial = tar_path.with_suffix(".partial")
    _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cpf", str(partial), "."],
         progress, "tar")
    partial.replace(tar_path)


def _wheel_project(filename: str) -> str:
    return _canonical(filename.split("-", 1)[0])


def _wheels(cache: Path, progress: Progress, name: str = "python") -> Path:
    """Download a flavor's wheels for bookworm's Python, once. The python flavor's are resolved
    with their dependencies (which must all be pinned); another flavor's pins are the wheels it
    adds on top of its parent, so they are fetched as they are (`--no-deps`) and the offline
    install in the image checks that they are complete."""
    reqs = _flavor_requirements(name)
    prefix = "wheels" if name == "python" else f"wheels-{name}"
    wheels = cache / f"{prefix}-{_digest(reqs, TARGET_PYTHON, PLATFORMS)}"
    if (wheels / ".complete").is_file():
        progress(f"using {len(list(wheels.glob('*.whl')))} cached {name} wheels ({wheels})")
        return wheels
    progress(f"downloading the {name} wheels for Python {TARGET_PYTHON}: {', '.join(reqs)}")
    partial = wheels.with_name(wheels.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:",
           "--python-version", TARGET_PYTHON,
           "--dest", str(partial), "--progress-bar", "off"]
    for target in PLATFORMS:
        cmd += ["--platform", target]
    if name != "python":
        cmd.append("--no-deps")
    _run(cmd + reqs, progress, "pip download", heartbeat=3.0)
    pinned = {_canonical(r.partition("==")[0]) for r in reqs}
    unpinned = sorted(w.name for w in partial.glob("*.whl") if _wheel_project(w.name) not in pinned)
    if unpinned:
        shutil.rmtree(partial, ignore_errors=True)
        raise ImageBuildError(
            f"{get_flavor(name).requirements} does not pin every dependency; pin these too: "
            + ", ".join(unpinned))
    (partial / ".complete").write_text(" ".join(reqs) + "\n")
    shutil.rmtree(wheels, ignore_errors=True)
    partial.replace(wheels)
    progress(f"downloaded {len(list(wheels.glob('*.whl')))} wheels")
    return wheels


def _chroot(rootfs: Path, args: list[str], progress: Progress, label: str) -> None:
    # a clean environment: the host's PIP_* settings point at host paths
    _run(["chroot", str(rootfs), *args], progress, label, env=dict(CHROOT_ENV))


def _install(rootfs: Path, wheels: Path, progress: Progress) -> None:
    staged = rootfs / "tmp" / "walnut-wheels"
    shutil.copytree(wheels, staged)
    (staged / "requirements.txt").write_text("\n".join(_requirements()) + "\n")
    progress(f"creating the virtualenv {VENV} and installing the wheels offline")
    _chroot(rootfs, ["/usr/bin/python3", "-m", "venv", VENV], progress, "venv")
    _chroot(rootfs, [f"{VENV}/bin/pip", "install", "--no-index", "--no-cache-dir",
                     "--disable-pip-version-check", "--find-links", "/tmp/walnut-wheels",
                     "-r", "/tmp/walnut-wheels/requirements.txt"], progress, "pip install")
    shutil.rmtree(staged)
    progress(f"adding the user walnut (uid {UID}, home {HOME})")
    _chroot(rootfs, ["groupadd", "--gid", str(UID), "walnut"], progress, "groupadd")
    _chroot(rootfs, ["useradd", "--uid", str(UID), "--gid", str(UID), "--home-dir", HOME,
                     "--create-home", "--shell", "/bin/bash", "walnut"], progress, "useradd")
    os.chmod(rootfs / HOME.lstrip("/"), 0o700)
    for junk in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)


def _build_base(client, tag: str, cache: Path, progress: Progress) -> None:
    wheels = _wheels(cache, progress)  # first: fails fast when the index is unreachable
    tmp = Path(tempfile.mkdtemp(prefix="walnut-rootfs-"))
    try:
        rootfs = tmp / "rootfs"
        rootfs.mkdir()
        _rootfs(rootfs, cache, progress)
        _install(rootfs, wheels, progress)
        progress(f"importing the root fs into Docker as {tag}")
        archive = tmp / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cpf", str(archive), "."],
             progress, "tar")
        shutil.rmtree(rootfs)
        repo, _, version = tag.partition(":")
        try:
            client.api.import_image(src=str(archive), repository=repo, tag=version,
                                    changes=IMAGE_CHANGES)
        except Exception as exc:
            raise ImageBuildError(f"docker import failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_flavor(client, name: str, parent: str, tag: str, cache: Path,
                  progress: Progress) -> None:
    """The parent's image plus this flavor's wheels, installed offline in a container that has
    no network and sees the wheels through a read-only bind mount, then committed."""
    wheels = _wheels(cache, progress, name)
    (wheels / "requirements.txt").write_text("\n".join(_flavor_requirements(name)) + "\n")
    progress(f"installing the {name} wheels offline on top of {parent}")
    started = time.monotonic()
    try:
        container = client.containers.create(
            parent, ["/bin/sh", "-c", FLAVOR_INSTALL], user="root", network_mode="none",
            volumes={str(wheels): {"bind": WHEELS_MOUNT, "mode": "ro"}},
            labels={"walnut.image": "build"})
    except Exception as exc:
        raise ImageBuildError(f"docker could not create the {name} build container: {exc}") \
            from exc
    try:
        container.start()
        last = time.monotonic()
        for chunk in container.logs(stream=True, follow=True):
            if time.monotonic() - last >= 5.0:
                line = chunk.decode(errors="replace").strip().splitlines()[-1:] or [""]
                progress(f"  pip install: {line[0][:160]}")
                last = time.monotonic()
        code = container.wait().get("StatusCode", 1)
        if code != 0:
            tail = container.logs(tail=25).decode(errors="replace")
            raise ImageBuildError(f"pip install of the {name} wheels failed (exit code "
                                  f"{code}):\n{tail}")
        repo, _, version = tag.partition(":")
        container.commit(repository=repo, tag=version, changes=list(IMAGE_CHANGES) + [
            f"LABEL walnut.image=packages walnut.flavor={name} walnut.parent={parent}"])
    except ImageBuildError:
        raise
    except Exception as exc:
        raise ImageBuildError(f"building the {name} packages image failed: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)
    progress(f"installed the {name} wheels in {time.monotonic() - started:.0f} s")


def _probe_packages(client, image: str, name: str) -> str:
    """The `walnut.packages` label: key versions read by importing them inside the image."""
    try:
        out = client.containers.run(image, ["python", "-c", PROBE, *get_flavor(name).imports],
                                    network_mode="none", remove=True, stdout=True,
                                    stderr=True, labels={"walnut.image": "build"})
    except docker.errors.ContainerError as exc:
        err = (exc.stderr or b"").decode(errors="replace")[-2000:]
        raise ImageBuildError(f"the {name} image's packages do not import:\n{err}") from exc
    except Exception as exc:
        raise ImageBuildError(f"could not read the {name} image's packages: {exc}") from exc
    text = out.decode(errors="replace").strip().splitlines()[-1]
    json.loads(text)  # a probe that printed something else fails the build here
    return text


def _build_gateway(client, base: str, tag: str, progress: Progress,
                   name: str = "python") -> None:
    packages = _probe_packages(client, base, name)
    progress(f"adding the walnut_gateway sources: {tag} ({packages})")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entries = [("Dockerfile", SOURCE_DOCKERFILE.encode())]
        entries += [(f"walnut_gateway/{name}", data) for name, data in _source_files()]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    try:
        client.images.build(fileobj=buf, custom_context=True, tag=tag, buildargs={"BASE": base},
                            pull=False, rm=True, forcerm=True,
                            labels={"walnut.image": "gateway", "walnut.base": base,
                                    "walnut.flavor": name, PACKAGES_LABEL: packages})
    except Exception as exc:
        raise ImageBuildError(f"docker build of the gateway layer failed: {exc}") from exc


def _docker(client):
    if client is not None:
        return client
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"no Docker engine answers: {exc}") from exc


def ensure_gateway_image(client=None, progress: Progress | None = None,
                         force: bool = False, flavor: str = "python") -> str:
    """Return the tag of the gateway image of `flavor` for the current inputs, building what
    is missing of it (its parents' packages images first). Without a build it says nothing."""
    progress = progress or _quiet
    chain = _chain(flavor)  # an unknown flavor fails before Docker is asked
    client = _docker(client)
    tag = gateway_image_tag(flavor)
    if not force and _image_exists(client, tag):
        return tag
    cache = cache_dir()
    with _build_lock(cache):
        if not force and _image_exists(client, tag):  # another process built it meanwhile
            return tag
        started = time.monotonic()
        progress(f"building the session gateway image {tag}")
        for f in chain:
            packages = packages_image_tag(f.name)
            if not force and _image_exists(client, packages):
                progress(f"using the {f.name} packages image {packages}")
            elif f.parent is None:
                _check_tools()
                _build_base(client, packages, cache, progress)
            else:
                _build_flavor(client, f.name, packages_image_tag(f.parent), packages, cache,
                              progress)
        _build_gateway(client, packages_image_tag(flavor), tag, progress, flavor)
        progress(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def built_packages(client, tag: str) -> dict | None:
    """The `walnut.packages` label of a local image; None when it is absent or unreadable."""
    try:
        labels = client.images.get(tag).labels or {}
        value = json.loads(labels[PACKAGES_LABEL])
    except Exception:  # noqa: BLE001 - no engine, no image, no label: the caller falls back
        return None
    return value if isinstance(value, dict) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_walnut.provider.image",
        description="Build a Walnut session gateway image offline (debootstrap + wheels) "
                    "and print its tag; does nothing when it already exists.",
    )
    parser.add_argument("--flavor", default="python", choices=FLAVORS,
                        help="which image (default: python)")
    parser.add_argument("--all", action="store_true", help="every flavor, one tag a line")
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    parser.add_argument("--tag-only", action="store_true",
                        help="print the tag the current sources produce; build nothing")
    args = parser.parse_args(argv)
    names = list(FLAVORS) if args.all else [args.flavor]
    if args.tag_only:
        for name in names:
            print(gateway_image_tag(name))
        return 0

    def show(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        client = _docker(None)
        for name in names:
            print(ensure_gateway_image(client, progress=show, force=args.force, flavor=name),
                  flush=True)
    except RuntimeError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
