"""Board profiles: the thread counts and batch size that suit a board, chosen by `board_profile`.

Values for Qwen2.5 0.5B Q4 through llama.cpp, from the published rates (tokens/s, prompt reading / generation):
Pi 5 ~174 / ~34 at 2 threads, Pi 4 ~25 / ~9.5.

- Pi 5 (4 Cortex-A76 at 2.4 GHz): generation reads every weight once per token, so it is bound by memory, and
  2 threads already reach the ~34 tokens/s; more threads only take cores from Piper (which speaks the first
  sentence while the model writes the next), Vosk and Chromium. Prompt reading is compute-bound and scales with
  every core: 4.
- Pi 4 (4 Cortex-A72 at 1.5-1.8 GHz): generation is memory-bound too (~9.5 tokens/s x ~0.4 GB of weights per
  token is about 3.8 GB/s, near what its LPDDR4 sustains), but the A72 has no dot-product instructions, so its
  compute is scarce: prompt reading is only 2.6x generation there (Pi 5: 5.1x). Two threads would leave
  generation short of compute, below the memory limit; 3 threads come close to it and still leave one core for
  Piper, Vosk and Chromium (llama.cpp's threads wait for each other at every layer, so one that shares its core
  with Piper holds up all the others). Prompt reading: all 4 cores, as on the Pi 5.
- n_batch stays 256, today's default, on both: no published rates compare batch sizes on these boards. Its cost
  is memory: llama.cpp's compute buffer grows linearly with it (Qwen2.5 0.5B at 4096 context: 37.75 MiB at 64,
  75.5 at 128, 151 at 256, 302 at 512, measured), so a 2 GB board's configuration sets n_batch = 128 explicitly,
  which wins over the profile like any explicit setting.
- generic (any other machine): the settings' own defaults, half the cores (at least 2) for generation and all of
  them for prompt reading, exactly as without profiles.

Every profile's thread counts are capped by the cores this process may use (a unit's AllowedCPUs, a container's
cpuset). Explicit settings (TOML, environment, flags) win over a profile's values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from daemon.board.detect import Board, BoardKind, detect_board
from daemon.settings import Settings, default_batch_threads, default_generation_threads, usable_cores

ProfileName = Literal["pi4", "pi5", "generic"]
BOARD_PROFILE_CHOICES = ("auto", "pi4", "pi5", "generic")
PROFILE_SETTINGS = ("threads", "threads_batch", "n_batch")
"""The settings a profile chooses."""

_BY_BOARD: dict[BoardKind, ProfileName] = {"pi4": "pi4", "pi5": "pi5", "other": "generic"}
_FORCED: dict[str, ProfileName] = {"pi4": "pi4", "pi5": "pi5", "generic": "generic"}
_PI_VALUES: dict[str, tuple[int, int, int]] = {  # threads, threads_batch, n_batch (see the module's text)
    "pi5": (2, 4, 256),
    "pi4": (3, 4, 256),
}


@dataclass(frozen=True)
class Profile:
    name: ProfileName
    threads: int
    threads_batch: int
    n_batch: int

    def values(self) -> dict[str, int]:
        return {"threads": self.threads, "threads_batch": self.threads_batch, "n_batch": self.n_batch}


@dataclass(frozen=True)
class BoardChoice:
    """The profile in force, the setting that chose it and what detection found (also when forced)."""

    setting: str
    board: Board
    profile: Profile

    @property
    def reason(self) -> str:
        if self.setting == "auto":
            return f"detected: {self.board.evidence}"
        return f"set by board_profile = {self.setting} (detected: {self.board.kind}; {self.board.evidence})"


def make_profile(name: ProfileName, cores: int) -> Profile:
    """A profile's values on a machine whose process may use `cores` cores."""
    if name == "generic":
        # The settings' own defaults, the very functions and value, so "generic" can never drift from them (they
        # count this process's cores themselves).
        return Profile("generic", default_generation_threads(), default_batch_threads(), Settings.n_batch)
    threads, threads_batch, n_batch = _PI_VALUES[name]
    return Profile(name, max(1, min(threads, cores)), max(1, min(threads_batch, cores)), n_batch)


def choose_profile(setting: str, board: Board, cores: int | None = None) -> BoardChoice:
    """`setting` is board_profile's value; "auto" takes the detected board's profile."""
    if setting not in BOARD_PROFILE_CHOICES:
        raise ValueError(f"board_profile {setting!r} is not one of {', '.join(BOARD_PROFILE_CHOICES)}")
    name = _BY_BOARD[board.kind] if setting == "auto" else _FORCED[setting]
    return BoardChoice(setting, board, make_profile(name, usable_cores() if cores is None else cores))


@functools.cache
def detected_board() -> Board:
    """This machine's board, looked at once per process: it does not change while the daemon runs."""
    return detect_board()


def board_choice(setting: str) -> BoardChoice:
    return choose_profile(setting, detected_board())


def profile_values(explicit: Mapping[str, object], board: Board | None = None) -> dict[str, int]:
    """The profile's values for the settings not given explicitly (`explicit`: what the TOML file, the
    environment and the flags set, already converted)."""
    setting = str(explicit.get("board_profile", "auto"))
    choice = choose_profile(setting, board or detected_board())
    return {name: value for name, value in choice.profile.values().items() if name not in explicit}
