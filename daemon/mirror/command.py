"""The `kioskd mirror` command line: `build DIR` and `verify DIR`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from daemon.mirror.errors import MirrorError
from daemon.mirror.targets import ARCHES, host_target, parse_target

_LOGGER = logging.getLogger(__name__)


def add_mirror_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mirror = commands.add_parser("mirror", help="build or verify the offline mirror a fleet installs from")
    actions = mirror.add_subparsers(dest="mirror_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="assemble the kioskd wheel, a locked wheelhouse, the model and the "
                               "voice files in DIR, with manifest.json and fleet-vars.json")
    build.add_argument("folder", type=Path, metavar="DIR", help="the mirror (created; a re-run updates it)")
    build.add_argument("--arch", action="append", choices=ARCHES, default=None,
                       help=f"target architecture, repeatable (default: this machine's, {host_target().arch})")
    build.add_argument("--python", default="3.11", help="the targets' CPython version (default 3.11: Debian 12)")
    build.add_argument("--model", default=None, help="a GGUF file, or a catalogue name to pull (default: the "
                       "default catalogue model, as `kioskd pull`)")
    build.add_argument("--voice-items", type=Path, default=None, metavar="FILE",
                       help="YAML or JSON with kioskd_voice_vosk_models / kioskd_voice_piper_voices (default: the "
                       "kioskd_voice role's defaults)")
    build.add_argument("--source-wheels", type=Path, default=None, metavar="DIR",
                       help="prebuilt wheels for the targets of llama-cpp-python, systemd-python, srt")
    build.add_argument("--project", type=Path, default=None, metavar="DIR",
                       help="the kioskd source tree (default: the one this kioskd runs from)")
    verify = actions.add_parser("verify", help="hash every file of a mirror again against its manifest.json")
    verify.add_argument("folder", type=Path, metavar="DIR", help="the mirror")


def run_mirror(args: argparse.Namespace) -> int:
    try:
        if args.mirror_command == "verify":
            return _verify(args.folder)
        return _build(args)
    except MirrorError as exc:
        _LOGGER.error("mirror %s failed: %s", args.mirror_command, exc)
        return 1


def _build(args: argparse.Namespace) -> int:
    from daemon.mirror.build import MirrorRequest, build_mirror
    from daemon.mirror.kioskd_wheel import default_project
    from daemon.mirror.voice import ROLE_DEFAULTS

    project = args.project or default_project()
    if project is None:
        raise MirrorError("this kioskd is installed, not run from its source tree: pass --project DIR")
    targets = tuple(dict.fromkeys(parse_target(arch, args.python) for arch in args.arch or [host_target().arch]))
    request = MirrorRequest(
        mirror=args.folder.resolve(), targets=targets, project=project, model=_model_file(args.model),
        voice_items=args.voice_items or project / ROLE_DEFAULTS, source_wheels=args.source_wheels,
        progress=sys.stderr.isatty())
    content = build_mirror(request)
    _LOGGER.info("mirror of kioskd %s for %s ready in %s", content.kioskd_version,
                 ", ".join(t.name for t in targets), request.mirror)
    sys.stdout.write(f"{request.mirror}\n")
    return 0


def _model_file(model: str | None) -> Path:
    """The model as a file: a path as given, else a catalogue model pulled (or found) in the models folder."""
    if model is not None and ("/" in model or model.endswith(".gguf")):
        return Path(model)
    from daemon.models.catalogue import ProvisionError
    from daemon.models.pull import pull_model
    from daemon.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        return pull_model(model or settings.model_name, settings.models_path, progress=sys.stderr.isatty()).path
    except (SettingsError, ProvisionError) as exc:
        raise MirrorError(f"cannot get the model {model or 'of the settings'}: {exc}") from exc


def _verify(folder: Path) -> int:
    from daemon.mirror.manifest import verify

    found = verify(folder)
    for name in found.unlisted:
        _LOGGER.warning("%s is not in the manifest", name)
    for name in found.bad:
        sys.stderr.write(f"kioskd: {folder / name}: sha256 or size differs from the manifest\n")
    for name in found.missing:
        sys.stderr.write(f"kioskd: {folder / name}: missing\n")
    if not found.ok:
        return 1
    sys.stdout.write(f"{found.checked} files match {folder / 'manifest.json'}\n")
    return 0
