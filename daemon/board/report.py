"""The board profile as /readyz, /status and the start-up log show it."""

from __future__ import annotations

import logging
from typing import Any

from daemon.board.profiles import PROFILE_SETTINGS, BoardChoice, board_choice
from daemon.settings import Settings

_LOGGER = logging.getLogger(__name__)


def board_report(settings: Settings, choice: BoardChoice | None = None) -> dict[str, Any]:
    """The profile's name, why it was chosen, its values, the values in force and which settings override it.

    `overridden` lists the settings whose value in force differs from the profile's: set in the TOML file, the
    environment or a flag (an explicit value equal to the profile's changes nothing, so it is not listed)."""
    choice = choice or board_choice(settings.board_profile)
    chosen = choice.profile.values()
    in_force = {name: getattr(settings, name) for name in PROFILE_SETTINGS}
    return {
        "profile": choice.profile.name,
        "setting": choice.setting,
        "detected": choice.board.kind,
        "model": choice.board.model or None,
        "reason": choice.reason,
        "profile_values": chosen,
        **in_force,
        "overridden": [name for name in PROFILE_SETTINGS if in_force[name] != chosen[name]],
    }


def log_profile(settings: Settings) -> None:
    """One line: which profile, why, and the values the model is loaded with."""
    report = board_report(settings)
    overridden = ", ".join(report["overridden"]) or "none"
    _LOGGER.info("board profile %s (%s): threads %d, threads_batch %d, n_batch %d; set by the settings "
                 "instead: %s", report["profile"], report["reason"], report["threads"], report["threads_batch"],
                 report["n_batch"], overridden)
