"""The kioskd wheel of a mirror: built from the source tree, with the kiosk page (kiosk/dist) built in."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from daemon.mirror.errors import MirrorError
from daemon.mirror.pip import run_pip

_LOGGER = logging.getLogger(__name__)
PAGE_INDEX = "kiosk/dist/index.html"
# What the page is built from (kiosk/README.md); a newer one of these means kiosk/dist is stale.
_PAGE_SOURCES = ("src", "public", "scripts", "index.html", "package.json", "package-lock.json", "vite.config.ts",
                 "tsconfig.json")
# Never part of a wheel, and large or busy: left out of the clean copy the wheel is built from (the top-level
# ones only at the top: daemon/models is a package).
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".cache", "node_modules", "*.egg-info", "__pycache__",
                                     ".*_cache")
_NOT_COPIED_AT_TOP = {"build", "dist", "models", "test-artifacts"}
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)\s*==\s*(?P<version>[^\s;,]+)")


def default_project() -> Path | None:
    """The source tree this package runs from, if it is one (an installed wheel has no pyproject.toml)."""
    root = Path(__file__).resolve().parent.parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def ensure_page(project: Path) -> None:
    """kiosk/dist exists and is newer than every page source; else build it as scripts/setup.sh does."""
    kiosk = project / "kiosk"
    index = project / PAGE_INDEX
    newest = _newest_mtime([kiosk / name for name in _PAGE_SOURCES])
    if index.is_file() and index.stat().st_mtime >= newest:
        return
    _LOGGER.info("kiosk/dist is missing or older than the page's sources: building the kiosk page")
    npm = shutil.which("npm")
    if npm is None:
        raise MirrorError(f"{index} is missing or stale and there is no npm to build it: install Node.js >= 20.19 "
                          "and run scripts/setup.sh (or `npm ci && npm run build` in kiosk/)")
    if not (kiosk / "node_modules" / ".package-lock.json").is_file():
        _npm(npm, kiosk, "ci", "--no-audit", "--no-fund", "--loglevel=error")
    _npm(npm, kiosk, "run", "--silent", "build")
    if not index.is_file():
        raise MirrorError(f"`npm run build` in {kiosk} gave no {PAGE_INDEX}")


def build_wheel(project: Path, dest: Path) -> Path:
    """The kioskd wheel built from a clean copy of `project` (no stale build/ of the tree gets in) into `dest`."""
    if not (project / "pyproject.toml").is_file():
        raise MirrorError(f"{project} is no kioskd source tree (no pyproject.toml); pass --project DIR")
    project = project.resolve()
    ensure_page(project)
    with tempfile.TemporaryDirectory(prefix="kioskd-source-") as tmp:
        source = Path(tmp) / "kioskd"
        shutil.copytree(project, source, ignore=lambda folder, names: _not_copied(project, folder, names))
        built = Path(tmp) / "wheel"
        run_pip("wheel", "-q", "--no-deps", "-w", built, source, what=f"building the kioskd wheel from {project}")
        (wheel,) = built.glob("kioskd-*.whl")
        dest.mkdir(parents=True, exist_ok=True)
        final = dest / wheel.name
        final.unlink(missing_ok=True)
        shutil.move(wheel, final)
    with zipfile.ZipFile(final) as archive:
        if PAGE_INDEX not in archive.namelist():
            raise MirrorError(f"{final.name} has no {PAGE_INDEX}: check [tool.setuptools.package-data] kiosk")
    _LOGGER.info("built %s", final.name)
    return final


def pinned_requirements(wheel: Path) -> dict[str, str]:
    """The `name==version` pins of the wheel's dependencies, extras included (normalised name -> version)."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = (name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    pins: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            found = _PIN.match(line.removeprefix("Requires-Dist:").strip())
            if found:
                pins[re.sub(r"[-_.]+", "-", found["name"]).lower()] = found["version"]
    return pins


def _not_copied(project: Path, folder: str, names: list[str]) -> set[str]:
    skipped = set(_NOT_COPIED(folder, names))
    if Path(folder) == project:
        skipped |= _NOT_COPIED_AT_TOP & set(names)
    return skipped


def _newest_mtime(paths: list[Path]) -> float:
    newest = 0.0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        newest = max([newest, *(file.stat().st_mtime for file in files)])
    return newest


def _npm(npm: str, kiosk: Path, *args: str) -> None:
    result = subprocess.run([npm, *args], cwd=kiosk, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise MirrorError(f"npm {' '.join(args)} in {kiosk} failed (exit {result.returncode}):\n"
                          f"{(result.stderr or result.stdout)[-2000:]}")
