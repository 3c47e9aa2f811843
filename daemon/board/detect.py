"""Which board the daemon runs on: a Raspberry Pi 4 class, a Pi 5 class, or something else.

Two sources, either enough alone: the device tree's model string (`/proc/device-tree/model`, NUL-terminated,
absent in most containers) and `/proc/cpuinfo` (its "Model" line on Raspberry Pi kernels, and the "CPU part" of
every core, present everywhere on ARM). The device tree names the board, so it wins; the CPU part names only the
core, so it classifies any board built on that core the same way (a Cortex-A76 board decodes like a Pi 5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BoardKind = Literal["pi4", "pi5", "other"]

MODEL_PATHS = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
CPUINFO_PATH = "proc/cpuinfo"
ARM_IMPLEMENTER = 0x41
CORE_CLASSES: dict[int, tuple[BoardKind, str]] = {
    0xD08: ("pi4", "Cortex-A72"),  # BCM2711: Pi 4, Pi 400, CM4
    0xD0B: ("pi5", "Cortex-A76"),  # BCM2712: Pi 5, Pi 500, CM5
}
# "Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi 400 Rev 1.0", "Raspberry Pi Compute Module 4S Rev 1.0",
# "Raspberry Pi 5 Model B Rev 1.0", "Raspberry Pi 500 Rev 1.0", "Raspberry Pi Compute Module 5 Rev 1.0".
_PI_MODEL = re.compile(r"Raspberry Pi (?:Compute Module )?(\d+)")
_PI_GENERATIONS: dict[str, BoardKind] = {"4": "pi4", "400": "pi4", "5": "pi5", "500": "pi5"}
_MAX_READ = 1 << 20  # a model string is a few dozen bytes; cpuinfo of a many-core server some hundred KB


@dataclass(frozen=True)
class Board:
    """What was found, and how: `evidence` is shown in /readyz, /status and the log."""

    kind: BoardKind
    evidence: str
    model: str = ""
    """The board's own name (device tree or cpuinfo "Model"), empty when neither says."""


def detect_board(root: Path = Path("/")) -> Board:
    """Look at `root`'s device tree and cpuinfo (a test passes a folder laid out like `/`). Never raises: a
    missing, unreadable or garbled file counts as saying nothing."""
    cpuinfo = _read_text(root / CPUINFO_PATH)
    model, model_source = _board_model(root, cpuinfo)
    if model:
        kind = model_kind(model)
        if kind != "other":
            return Board(kind, f"{model_source} {model!r}", model)
    by_core = core_kind(cpuinfo)
    if by_core is not None:
        kind, why = by_core
        return Board(kind, why, model)
    if model:
        return Board("other", f"{model_source} {model!r} is not a Raspberry Pi 4 or 5, and the cores are not "
                              f"all Cortex-A72 or all Cortex-A76", model)
    return Board("other", _nothing_found(cpuinfo))


def model_kind(model: str) -> BoardKind:
    """The class of a Raspberry Pi model string; "other" for other boards and other Pi generations."""
    match = _PI_MODEL.match(model.strip())
    return _PI_GENERATIONS.get(match.group(1), "other") if match else "other"


def core_kind(cpuinfo: str) -> tuple[BoardKind, str] | None:
    """The class whose core every listed CPU is ("CPU part" lines, ARM's implementer code), with the reason;
    None when the cores are unknown, mixed (big.LITTLE) or not ARM's."""
    parts = _hex_values(cpuinfo, "cpu part")
    implementers = _hex_values(cpuinfo, "cpu implementer")
    if not parts or len(set(parts)) != 1 or any(code != ARM_IMPLEMENTER for code in implementers):
        return None
    known = CORE_CLASSES.get(parts[0])
    if known is None:
        return None
    kind, core = known
    return kind, f"cpuinfo: {len(parts)} {core} cores (CPU part {parts[0]:#x})"


def _board_model(root: Path, cpuinfo: str) -> tuple[str, str]:
    for relative in MODEL_PATHS:
        raw = _read_bytes(root / relative)
        # The device tree's string ends in NUL; garbage after it is not part of the name.
        if text := _readable(raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")):
            return text, "device-tree model"
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        # "Model" as Raspberry Pi kernels print it; x86's lower-case "model" is a CPU model number.
        if sep and key.strip() == "Model" and (text := _readable(value)):
            return text, "cpuinfo model"
    return "", ""


def _readable(text: str) -> str:
    """The text stripped, or "" when it is garbled (undecodable bytes, control characters)."""
    text = text.strip()
    return text if text.isprintable() and "\ufffd" not in text else ""


def _hex_values(cpuinfo: str, wanted: str) -> list[int]:
    values = []
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == wanted:
            try:
                values.append(int(value.strip(), 16))
            except ValueError:
                continue  # garbage in one line says nothing about the others
    return values


def _nothing_found(cpuinfo: str) -> str:
    if not cpuinfo:
        return "no device-tree model and no readable /proc/cpuinfo"
    parts = sorted({f"{code:#x}" for code in _hex_values(cpuinfo, "cpu part")})
    if not parts:
        return "no device-tree model; cpuinfo lists no ARM CPU part (not an ARM board)"
    return f"no device-tree model; CPU part {', '.join(parts)} is neither all Cortex-A72 nor all Cortex-A76"


def _read_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(_MAX_READ)
    except OSError:  # absent, a directory, no permission: this source says nothing
        return b""


def _read_text(path: Path) -> str:
    return _read_bytes(path).decode("utf-8", errors="replace")
