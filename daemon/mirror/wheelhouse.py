"""The wheelhouse of one target and its hashed lock: `pip download` resolved for the target's platform."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from daemon.files import write_text_atomically
from daemon.mirror.errors import MirrorError
from daemon.mirror.pip import run_pip
from daemon.mirror.source_wheels import add_source_wheels
from daemon.mirror.targets import Target, parse_wheel_name
from daemon.models.download import sha256_file

_LOGGER = logging.getLogger(__name__)
# The extras the kioskd_daemon role installs by default (kioskd_daemon_extras).
EXTRAS = ("llm", "voice", "systemd")


def lock_path(mirror: Path, target: Target) -> Path:
    return mirror / "locks" / f"{target.name}.txt"


def build_wheelhouse(mirror: Path, kioskd_wheel: Path, target: Target, pins: dict[str, str],
                     source_wheels: Path | None) -> list[Path]:
    """Every wheel kioskd[EXTRAS] needs on `target`, put in mirror/wheels (kioskd's own left out)."""
    wheels = mirror / "wheels"
    add_source_wheels(target, wheels, pins, source_wheels)
    _LOGGER.info("resolving the wheelhouse for %s with pip download", target.name)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=mirror) as tmp:
        run_pip("download", "-q", *target.pip_args(), "--find-links", wheels, "-d", tmp,
                f"{kioskd_wheel}[{','.join(EXTRAS)}]", what=f"resolving the dependencies for {target.name}",
                timeout=3600)
        resolved = sorted(path for path in Path(tmp).glob("*.whl") if path.name != kioskd_wheel.name)
        for path in resolved:
            os.replace(path, wheels / path.name)
    return [wheels / path.name for path in resolved]


def write_lock(mirror: Path, target: Target, lines: list[str]) -> Path:
    path = lock_path(mirror, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, "".join(f"{line}\n" for line in lines))
    return path


def read_lock(path: Path) -> list[tuple[str, str, str]]:
    """(project, version, sha256) of each line of a lock file; MirrorError on a line that is not one."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        requirement, _, digest = line.partition(" --hash=sha256:")
        project, _, version = requirement.partition("==")
        if not (project and version and len(digest) == 64):
            raise MirrorError(f"{path}:{number}: not a `name==version --hash=sha256:...` line: {line!r}")
        entries.append((project, version, digest))
    return entries


def lock_line(wheel: Path, target: Target) -> str:
    """`name==version --hash=sha256:...` of a wheel that installs on `target`."""
    name = parse_wheel_name(wheel.name)
    if not name.fits(target):
        raise MirrorError(f"pip chose {wheel.name}, which does not install on {target.name}")
    return f"{name.project}=={name.version} --hash=sha256:{sha256_file(wheel)}"
