"""`kioskd pull [NAME]`: fetch a catalogue model into MODELS_DIR, verified, with a progress bar on a terminal."""

from __future__ import annotations

import logging
import sys

from daemon.models.catalogue import CATALOGUE
from daemon.models.pull import ProvisionError, pull_model
from daemon.settings import Settings

_LOGGER = logging.getLogger(__name__)


def run_pull(settings: Settings, name: str | None, *, list_only: bool = False) -> int:
    if list_only:
        for entry in CATALOGUE.values():
            sys.stdout.write(f"{entry.name:<28} {entry.filename:<40} {entry.description}\n")
        return 0
    try:
        pulled = pull_model(name or settings.model_name, settings.models_path, progress=sys.stderr.isatty())
    except ProvisionError as exc:
        _LOGGER.error("pull failed: %s", exc)
        return 1
    _LOGGER.info("model ready at %s (sha256 %s, from %s)", pulled.path, pulled.sha256, pulled.source)
    sys.stdout.write(f"{pulled.path}\n")
    return 0
