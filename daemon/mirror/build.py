"""`kioskd mirror build`: the steps that assemble a mirror, in order, from one frozen request."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from daemon.files import link_or_copy
from daemon.mirror.errors import MirrorError
from daemon.mirror.fleet_vars import MirrorContent, write_fleet_vars
from daemon.mirror.kioskd_wheel import build_wheel, pinned_requirements
from daemon.mirror.manifest import MANIFEST, write_manifest
from daemon.mirror.targets import Target, parse_wheel_name
from daemon.mirror.voice import fetch_items, load_items
from daemon.mirror.wheelhouse import build_wheelhouse, lock_line, lock_path, write_lock
from daemon.models.download import sha256_file

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class MirrorRequest:
    """Everything `kioskd mirror build` was asked for, resolved (the model is a file by now)."""

    mirror: Path
    targets: tuple[Target, ...]
    project: Path
    model: Path
    voice_items: Path
    source_wheels: Path | None
    progress: bool


def build_mirror(request: MirrorRequest) -> MirrorContent:
    """Assemble the mirror; re-running it on the same folder fetches only what is missing or wrong."""
    mirror = request.mirror
    if request.source_wheels is not None and not request.source_wheels.is_dir():
        raise MirrorError(f"--source-wheels {request.source_wheels} is not a folder")
    items = load_items(request.voice_items)
    # Until the build ends there is no manifest: a half-built mirror never passes for a finished one.
    (mirror / MANIFEST).unlink(missing_ok=True)
    # The files that can fail their sha256 first, the long wheel builds and downloads after them.
    model = _place_model(request.model, mirror / "models")
    fetch_items(mirror, items, progress=request.progress)
    (mirror / "wheels").mkdir(parents=True, exist_ok=True)
    kioskd_wheel = build_wheel(request.project, mirror / "wheels")
    pins = pinned_requirements(kioskd_wheel)
    locks: dict[str, list[str]] = {}
    kept = {kioskd_wheel.name}
    for target in request.targets:
        wheels = build_wheelhouse(mirror, kioskd_wheel, target, pins, request.source_wheels)
        locks[target.arch] = [lock_line(wheel, target) for wheel in wheels]
        write_lock(mirror, target, locks[target.arch])
        kept |= {wheel.name for wheel in wheels}
        _LOGGER.info("%s: %d locked wheels", lock_path(mirror, target).relative_to(mirror), len(wheels))
    _prune(mirror, kept, request.targets)
    content = MirrorContent(
        kioskd_version=parse_wheel_name(kioskd_wheel.name).version,
        kioskd_wheel=f"wheels/{kioskd_wheel.name}", kioskd_wheel_sha256=sha256_file(kioskd_wheel),
        locks=locks, model_file=f"models/{model.name}", model_sha256=sha256_file(model), voice_items=items)
    write_fleet_vars(mirror, content)
    write_manifest(mirror, content.kioskd_version, [
        {"arch": t.arch, "python": t.python, "lock": str(lock_path(mirror, t).relative_to(mirror))}
        for t in request.targets])
    return content


def _prune(mirror: Path, kept: set[str], targets: tuple[Target, ...]) -> None:
    """Drop wheels and locks this build does not use (an older kioskd, a dropped target): the mirror holds
    what this build's locks name and nothing more."""
    for wheel in (mirror / "wheels").iterdir():
        if wheel.name not in kept and wheel.is_file():
            _LOGGER.info("removing %s (no lock of this build names it)", wheel.name)
            wheel.unlink()
    for lock in (mirror / "locks").glob("*.txt"):
        if lock not in {lock_path(mirror, t) for t in targets}:
            lock.unlink()


def _place_model(model: Path, models: Path) -> Path:
    """models/<file>: a hard link to the model where the file system allows one, else a copy."""
    if not model.is_file():
        raise MirrorError(f"the model {model} is not a file")
    models.mkdir(parents=True, exist_ok=True)
    dest = models / model.name
    if dest.is_file() and os.path.samefile(dest, model):
        return dest
    for stale in models.glob("*"):
        stale.unlink()  # one model per mirror: fleet-vars.json names it
    link_or_copy(model, dest)
    return dest

