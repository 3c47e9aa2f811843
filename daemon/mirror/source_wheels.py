"""Wheels of the dependencies PyPI ships only as source (the role installs with --only-binary=:all:).

For each target, in this order: a prebuilt wheel from --source-wheels DIR; on this machine's own architecture
and Python, pip's wheel cache (the build `pip install` left there) or `pip wheel` now; a pure-Python one is built
once and serves every target; a foreign architecture's compiled ones come from daemon.mirror.cross_build.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from daemon.files import link_or_copy
from daemon.mirror.errors import MirrorError
from daemon.mirror.llama_build import x86_64_wheel
from daemon.mirror.pip import run_pip, wheel_cache
from daemon.mirror.targets import Target, WheelName, parse_wheel_name

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceOnly:
    """A dependency without wheels on PyPI: its normalised name and whether it is pure Python."""

    project: str
    pure: bool


SOURCE_ONLY = (SourceOnly("llama-cpp-python", pure=False), SourceOnly("systemd-python", pure=False),
               SourceOnly("srt", pure=True))


def add_source_wheels(target: Target, wheels: Path, pins: dict[str, str], prebuilt: Path | None) -> None:
    """Put a wheel for `target` of every SOURCE_ONLY package into `wheels` (the mirror's wheels/)."""
    missing = []
    for package in SOURCE_ONLY:
        version = _version(package, pins)
        found = _fitting(prebuilt, package, version, target) if prebuilt else None
        found = found or _fitting(wheels, package, version, target)
        if found is None and (package.pure or target.is_this_machine()):
            found = _built_here(package, version, target, wheels)
        if found is None:
            missing.append(package)
        elif found.parent != wheels:
            link_or_copy(found, wheels / found.name)
    if missing:
        _cross_build(target, wheels, missing, pins)


def _version(package: SourceOnly, pins: dict[str, str]) -> str | None:
    """The version kioskd pins, else the one installed here (a transitive dependency), else None (newest)."""
    if package.project in pins:
        return pins[package.project]
    try:
        return importlib.metadata.version(package.project)
    except importlib.metadata.PackageNotFoundError:
        return None


def _fitting(folder: Path, package: SourceOnly, version: str | None, target: Target) -> Path | None:
    """The newest wheel in `folder` of `package` (at `version`, if given) that installs on `target`."""
    candidates = [path for path, name in _wheels_in(folder.glob("*.whl"))
                  if name.project == package.project and (version is None or name.version == version)
                  and name.fits(target)]
    return sorted(candidates)[-1] if candidates else None


def _wheels_in(paths: Iterable[Path]) -> Iterable[tuple[Path, WheelName]]:
    for path in paths:
        try:
            yield path, parse_wheel_name(path.name)
        except MirrorError:
            continue


def _built_here(package: SourceOnly, version: str | None, target: Target, wheels: Path) -> Path:
    """From pip's wheel cache if it holds this version, else built by `pip wheel` into `wheels`. llama-cpp-python
    for x86_64 never: pip's cache may hold a -march=native build (see daemon.mirror.llama_build)."""
    if package.project == "llama-cpp-python" and target.arch == "x86_64":
        return x86_64_wheel(version or _version_required(package))
    cached = _from_pip_cache(package, version, target) if version is not None else None
    if cached is not None:
        _LOGGER.info("%s %s: the wheel from pip's cache", package.project, version)
        return cached
    requirement = package.project + (f"=={version}" if version else "")
    _LOGGER.info("building %s with pip wheel (llama-cpp-python takes minutes)", requirement)
    with tempfile.TemporaryDirectory(prefix=".kioskd-wheel-", dir=wheels) as tmp:
        run_pip("wheel", "-q", "--no-deps", "-w", tmp, requirement, what=f"pip wheel {requirement}")
        (built,) = Path(tmp).glob("*.whl")
        final = wheels / built.name
        shutil.move(built, final)
    return final


def _version_required(package: SourceOnly) -> str:
    raise MirrorError(f"kioskd pins no {package.project} version and none is installed here")


def _from_pip_cache(package: SourceOnly, version: str, target: Target) -> Path | None:
    try:
        cache = wheel_cache()
    except MirrorError:
        return None  # pip runs without a cache (PIP_NO_CACHE_DIR)
    cached = [path for path, name in _wheels_in(cache.rglob("*.whl"))
              if name.project == package.project and name.version == version and name.fits(target)]
    return sorted(cached)[-1] if cached else None


def _cross_build(target: Target, wheels: Path, missing: list[SourceOnly], pins: dict[str, str]) -> None:
    """The compiled wheels for a foreign target, from the cross builder (imported here: it is optional)."""
    names = ", ".join(package.project for package in missing)
    try:
        cross_build = importlib.import_module("daemon.mirror.cross_build")
    except ImportError as exc:
        raise MirrorError(f"no wheel for {target.name} of {names} (PyPI has only their sources) and no cross "
                          f"builder here ({exc}): build them on a {target.arch} machine with `pip wheel` and "
                          "pass that folder with --source-wheels DIR") from exc
    _LOGGER.info("building %s for %s with daemon.mirror.cross_build", names, target.name)
    built: list[Path] = cross_build.build_source_wheels(target.arch, target.python, wheels)
    for path in built:
        if path.parent != wheels:
            link_or_copy(path, wheels / path.name)
    still = [p.project for p in missing if _fitting(wheels, p, _version(p, pins), target) is None]
    if still:
        raise MirrorError(f"the cross build for {target.name} gave no wheel of {', '.join(still)}; "
                          "pass prebuilt ones with --source-wheels DIR")

