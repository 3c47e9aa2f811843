"""fleet-vars.json: the Ansible variables that point a fleet at a mirror (`-e @fleet-vars.json` together with
`-e kioskd_mirror_url=http://...`). Paths are relative to the mirror: the roles fetch <mirror>/<path>."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.files import write_text_atomically

FLEET_VARS = "fleet-vars.json"


@dataclass(frozen=True)
class MirrorContent:
    """What a build put in the mirror, as the playbook needs to know it."""

    kioskd_version: str
    kioskd_wheel: str  # relative to the mirror: wheels/kioskd-<version>-py3-none-any.whl
    kioskd_wheel_sha256: str
    locks: dict[str, list[str]]  # architecture (Ansible's architecture fact) -> lock lines
    model_file: str
    model_sha256: str
    voice_items: dict[str, list[dict[str, Any]]]  # kioskd_voice_vosk_models / kioskd_voice_piper_voices


def fleet_vars(content: MirrorContent) -> dict[str, Any]:
    return {
        "kioskd_daemon_version": content.kioskd_version,
        # The role takes the wheel's file name from this URL and fetches <mirror>/wheels/<file name>.
        "kioskd_daemon_wheel_url": content.kioskd_wheel,
        "kioskd_daemon_wheel_sha256": content.kioskd_wheel_sha256,
        "kioskd_daemon_requirements_by_arch": content.locks,
        "kioskd_model_filename": Path(content.model_file).name,
        "kioskd_model_url": content.model_file,
        "kioskd_model_sha256": content.model_sha256,
        **content.voice_items,
    }


def write_fleet_vars(mirror: Path, content: MirrorContent) -> Path:
    path = mirror / FLEET_VARS
    write_text_atomically(path, json.dumps(fleet_vars(content), indent=2, ensure_ascii=False) + "\n")
    return path
