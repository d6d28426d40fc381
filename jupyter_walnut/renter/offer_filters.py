"""Offers by image: which images an offer has, with their key package versions, and the
filters `%walnut providers` and GET /walnut/offers share (image name, a package requirement
such as `torch>=2`, CUDA present or of a version).

What a provider says about its images is provider-controlled: `image_details` keeps only
bounded names and version strings, for display and filtering, never for anything else. An
offer from before images listed packages has none: its versions are unknown, so it matches
no package or CUDA filter (and is never an error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..common.errors import BadRequest
from .drift import MAX_PACKAGES, NAME, VERSION

MAX_IMAGES = 64
MAX_FILTERS = 16
ANY_CUDA = ("", "any", "yes", "true", "1")
# offers key packages by import name (sklearn), people filter by either name
ALIASES = {"sklearn": "scikit-learn", "py": "python"}


def _key(name: str) -> str:
    name = canonicalize_name(name)
    return ALIASES.get(name, name)


def image_details(images: Any) -> list[dict]:
    """The images of a provider's status, reduced to what may be shown: name, description,
    flavor and a flat map of package -> version string (or None: not in the image)."""
    out = []
    for img in images[:MAX_IMAGES] if isinstance(images, list) else []:
        if not isinstance(img, dict) or not isinstance(img.get("name"), str):
            continue
        flavor = img.get("flavor")
        out.append({
            "name": img["name"][:128],
            "description": (img.get("description") or "")[:1024]
            if isinstance(img.get("description"), str) else "",
            "flavor": flavor if isinstance(flavor, str) and NAME.match(flavor) else None,
            "packages": _packages(img.get("packages")),
        })
    return out


def _packages(value: Any) -> dict[str, str | None] | None:
    if not isinstance(value, dict):
        return None  # unknown (an older provider)
    return {k: v for k, v in list(value.items())[:MAX_PACKAGES]
            if isinstance(k, str) and NAME.match(k)
            and (v is None or (isinstance(v, str) and VERSION.match(v)))}


@dataclass(frozen=True)
class ImageFilter:
    image: str | None = None
    packages: tuple[Requirement, ...] = field(default_factory=tuple)
    cuda: SpecifierSet | bool | None = None  # True: any CUDA; a set: its version

    def __bool__(self) -> bool:
        return bool(self.image or self.packages or self.cuda is not None)


def parse_image_filter(image: str | None = None, packages: Iterable[str] = (),
                       cuda: str | None = None) -> ImageFilter:
    """The filters as the user typed them; BadRequest (one line) for what is not one."""
    reqs = []
    for text in list(packages):
        if len(reqs) >= MAX_FILTERS:
            raise BadRequest(f"at most {MAX_FILTERS} package filters")
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise BadRequest(f"bad package filter {text[:100]!r}: {_first_line(exc)}; "
                             "write e.g. 'torch>=2' or 'pandas==2.2.*'") from None
        if req.url or req.marker or req.extras:
            raise BadRequest(f"bad package filter {text[:100]!r}: only a name and a version "
                             "specifier, e.g. 'torch>=2'")
        reqs.append(req)
    return ImageFilter(image=(image or "").strip() or None, packages=tuple(reqs),
                       cuda=_cuda(cuda))


def _cuda(text: str | None) -> SpecifierSet | bool | None:
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ANY_CUDA:
        return True
    if text[0].isdigit():  # "12" or "12.1": that release series
        text = f"=={text}.*" if not text.endswith("*") else f"=={text}"
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise BadRequest(f"bad CUDA filter {text[:100]!r}: write e.g. 'any', '12' or "
                         "'>=12.1'") from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _version(text: Any) -> Version | None:
    try:
        return Version(text) if isinstance(text, str) else None
    except InvalidVersion:
        return None


def image_matches(image: Mapping, f: ImageFilter) -> bool:
    """Whether one image (as image_details gives it) meets every part of the filter."""
    if f.image and f.image.lower() not in (image.get("name") or "").lower():
        return False
    if not f.packages and f.cuda is None:
        return True
    packages = image.get("packages")
    if not isinstance(packages, Mapping):
        return False  # versions unknown
    by_name = {_key(k): v for k, v in packages.items()}
    for req in f.packages:
        version = _version(by_name.get(_key(req.name)))
        if version is None or not req.specifier.contains(version, prereleases=True):
            return False
    if f.cuda is not None:
        cuda = by_name.get("cuda")
        if not cuda:
            return False
        if isinstance(f.cuda, SpecifierSet):
            version = _version(cuda)
            if version is None or not f.cuda.contains(version, prereleases=True):
                return False
    return True


def filter_offers(rows: list[dict], f: ImageFilter) -> list[dict]:
    """The offers with at least one image that meets the filter, each with the names of
    those images as `matching_images` (all rows unchanged when there is no filter)."""
    if not f:
        return rows
    out = []
    for row in rows:
        matching = [i["name"] for i in row.get("image_details") or [] if image_matches(i, f)]
        if matching:
            out.append({**row, "matching_images": matching})
    return out


def image_label(image: Mapping) -> str:
    """"scipy · py3.11 · torch 2.13 (CPU)": the name and the versions that matter most."""
    parts = [str(image.get("name", ""))[:64]]
    packages = image.get("packages") if isinstance(image.get("packages"), Mapping) else {}
    python = _version(packages.get("python"))
    if python is not None:
        parts.append(f"py{'.'.join(map(str, python.release[:2]))}")
    torch, cuda = _version(packages.get("torch")), packages.get("cuda")
    if torch is not None:
        build = f"CUDA {cuda}" if isinstance(cuda, str) else "CPU"
        parts.append(f"torch {'.'.join(map(str, torch.release[:2]))} ({build})")
    elif isinstance(cuda, str):
        parts.append(f"CUDA {cuda}")
    return " · ".join(parts)
