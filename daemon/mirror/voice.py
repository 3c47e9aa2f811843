"""The voice files of a mirror: each Vosk model and Piper voice of the kioskd_voice role, fetched from its URL
into its `mirror_path` and checked against its sha256."""

from __future__ import annotations

import importlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from daemon.mirror.errors import MirrorError
from daemon.models.catalogue import ProvisionError
from daemon.models.download import download

_LOGGER = logging.getLogger(__name__)
VOSK = "kioskd_voice_vosk_models"
PIPER = "kioskd_voice_piper_voices"
ROLE_DEFAULTS = Path("ansible/roles/kioskd_voice/defaults/main.yml")
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def load_items(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The Vosk and Piper lists of a file shaped like the role's defaults (YAML, or JSON), those it has; `{{ name }}`
    in a value is replaced by the file's own top-level variable `name` (the role's piper base URL)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MirrorError(f"cannot read the voice items {path}: {exc}") from exc
    data = _parse(path, text)
    if not isinstance(data, dict) or not isinstance(data.get(VOSK, []), list) or not isinstance(
            data.get(PIPER, []), list):
        raise MirrorError(f"{path}: expected a mapping with the lists {VOSK} and/or {PIPER}")
    scalars = {key: value for key, value in data.items() if isinstance(value, str)}
    items = {kind: [_render(item, scalars, path) for item in data[kind]] for kind in (VOSK, PIPER) if kind in data}
    for kind, listed in items.items():
        for item in listed:
            _check_item(kind, item, path)
    return items


def fetch_items(mirror: Path, items: dict[str, list[dict[str, Any]]], *, progress: bool) -> list[Path]:
    """Each item's file (and a Piper voice's .onnx.json) under mirror/<mirror_path>, verified; the paths.
    A file already there with the right sha256 is kept; a mismatch raises MirrorError and leaves no file."""
    fetched = []
    for kind, listed in items.items():
        for item in listed:
            files = [(item["url"], item["mirror_path"], item["sha256"])]
            if kind == PIPER:
                files.append((item["config_url"], f"{item['mirror_path']}.json", item["config_sha256"]))
            for url, relative, sha256 in files:
                dest = _inside(mirror, relative)
                try:
                    download(url, dest, sha256=sha256, size=None, progress=progress)
                except ProvisionError as exc:
                    raise MirrorError(f"voice item {item['name']!r} ({kind}): {exc}") from exc
                fetched.append(dest)
    return fetched


def _parse(path: Path, text: str) -> Any:
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise MirrorError(f"{path}: not valid JSON: {exc}") from exc
    try:
        yaml = importlib.import_module("yaml")
    except ImportError as exc:
        raise MirrorError(f"reading {path} needs PyYAML (pip install 'kioskd[mirror]'), or give a .json file") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MirrorError(f"{path}: not valid YAML: {exc}") from exc


def _render(item: object, scalars: dict[str, str], path: Path) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise MirrorError(f"{path}: every voice item is a mapping, not {item!r}")

    def substitute(value: object) -> object:
        if not isinstance(value, str):
            return value
        unknown = [name for name in _VARIABLE.findall(value) if name not in scalars]
        if unknown or ("{{" in value and not _VARIABLE.search(value)):
            raise MirrorError(f"{path}: cannot resolve {value!r} (only plain variables of the same file)")
        return _VARIABLE.sub(lambda found: scalars[found[1]], value)

    return {key: substitute(value) for key, value in item.items()}


def _check_item(kind: str, item: dict[str, Any], path: Path) -> None:
    needed = ["name", "url", "sha256", "mirror_path"] + (["config_url", "config_sha256"] if kind == PIPER else [])
    missing = [key for key in needed if not item.get(key)]
    if missing:
        raise MirrorError(f"{path}: {kind} item {item.get('name', '?')!r} lacks {', '.join(missing)}")
    for key in ("sha256", "config_sha256"):
        if key in needed and not _SHA256.match(str(item[key])):
            raise MirrorError(f"{path}: {kind} item {item['name']!r}: {key} is not a sha256 hex digest")


def _inside(mirror: Path, relative: str) -> Path:
    """mirror/relative, refusing a mirror_path that would write outside the mirror."""
    dest = (mirror / relative).resolve()
    if not dest.is_relative_to(mirror.resolve()) or Path(relative).is_absolute():
        raise MirrorError(f"mirror_path {relative!r} is outside the mirror")
    return dest
