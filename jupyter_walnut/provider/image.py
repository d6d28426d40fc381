"""Build the session gateway image where no container registry can be reached.

Production providers build `kernel_gateway/image/Dockerfile` (CUDA base) as usual. Here (this
machine, CI, the offline demo) nothing can be pulled, so the image is made from Debian's own
packages and wheels downloaded on the host:

1. a base image `walnut-gateway-base:<hash>`: `debootstrap --variant=minbase` bookworm with
   python3, a virtualenv at /opt/walnut with the wheels of requirements.txt installed offline,
   a user `walnut` (uid 1000, home /home/walnut/work), then `docker import` with the image
   config (USER, WORKDIR, ENV, CMD, EXPOSE);
2. the gateway image `walnut-gateway:<hash>`: the base plus the `walnut_gateway` sources (a
   COPY-only build that needs no network), so a source change rebuilds in seconds.

Each tag's hash covers every input of that image. The debootstrapped root fs (as a tar) and
the wheels are cached under ~/.cache/walnut/ so a rebuild does not download them again.

    python -m jupyter_walnut.provider.image     # builds when needed, prints the tag
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
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


def requirements_file() -> Path:
    """kernel_gateway/image/requirements.txt (the wheel ships it as jupyter_walnut/_image)."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[2] / "kernel_gateway" / "image" / "requirements.txt",
        here.parents[1] / "_image" / "requirements.txt",
    ):
        if candidate.is_file():
            return candidate
    raise ImageBuildError("kernel_gateway/image/requirements.txt is missing")


def _source_files() -> list[tuple[str, bytes]]:
    root = gateway_sources()
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((path.relative_to(root).as_posix(), path.read_bytes()))
    return files


def _requirements() -> list[str]:
    lines = requirements_file().read_text().splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


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


def gateway_image_tag() -> str:
    """The tag the current inputs produce: walnut-gateway:<hash12>."""
    return f"{IMAGE_REPO}:{_digest(base_hash(), SOURCE_DOCKERFILE, _source_files())}"


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


def _wheels(cache: Path, progress: Progress) -> Path:
    """Download the wheels of requirements.txt for bookworm's Python, once."""
    reqs = _requirements()
    wheels = cache / f"wheels-{_digest(reqs, TARGET_PYTHON, PLATFORMS)}"
    if (wheels / ".complete").is_file():
        progress(f"using {len(list(wheels.glob('*.whl')))} cached wheels ({wheels})")
        return wheels
    progress(f"downloading wheels for Python {TARGET_PYTHON}: {', '.join(reqs)}")
    partial = wheels.with_name(wheels.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:",
           "--python-version", TARGET_PYTHON,
           "--dest", str(partial), "--progress-bar", "off"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    _run(cmd + reqs, progress, "pip download", heartbeat=3.0)
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


def _build_gateway(client, base: str, tag: str, progress: Progress) -> None:
    progress(f"adding the walnut_gateway sources: {tag}")
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
                            labels={"walnut.image": "gateway", "walnut.base": base})
    except Exception as exc:
        raise ImageBuildError(f"docker build of the gateway layer failed: {exc}") from exc


def ensure_gateway_image(client=None, progress: Progress | None = None,
                         force: bool = False) -> str:
    """Return the tag of the gateway image for the current inputs, building it if missing."""
    progress = progress or _quiet
    if client is None:
        try:
            client = docker.from_env()
        except docker.errors.DockerException as exc:
            raise ImageBuildError(f"no Docker engine answers: {exc}") from exc
    tag = gateway_image_tag()
    if not force and _image_exists(client, tag):
        return tag
    cache = cache_dir()
    with _build_lock(cache):
        if not force and _image_exists(client, tag):  # another process built it meanwhile
            return tag
        started = time.monotonic()
        progress(f"building the session gateway image {tag}")
        base = f"{BASE_REPO}:{base_hash()}"
        if force or not _image_exists(client, base):
            _check_tools()
            _build_base(client, base, cache, progress)
        else:
            progress(f"using the base image {base}")
        _build_gateway(client, base, tag, progress)
        progress(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_walnut.provider.image",
        description="Build the Walnut session gateway image offline (debootstrap + wheels) "
                    "and print its tag; does nothing when it already exists.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    parser.add_argument("--tag-only", action="store_true",
                        help="print the tag the current sources produce; build nothing")
    args = parser.parse_args(argv)
    if args.tag_only:
        print(gateway_image_tag())
        return 0

    def show(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        tag = ensure_gateway_image(progress=show, force=args.force)
    except RuntimeError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
