"""The `kioskd` command: `serve` runs the daemon, `pull` fetches a model, `doctor` checks the set-up,
`knowledge check` validates a venue's knowledge folder, `operator-pin` makes the hash for the operator PIN,
`mirror build`/`mirror verify` make and check the offline mirror a fleet installs from."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon import __version__, logs
from daemon.mirror.command import add_mirror_parser
from daemon.settings import FIELDS, SettingsError, add_arguments, env_name, settings_from_args

_LOGGER = logging.getLogger(__name__)


def _settings_epilog() -> str:
    lines = ["settings (flag / environment variable / TOML key in /etc/kioskd/config.toml):"]
    for name, f in FIELDS.items():
        lines.append(f"  --{name.replace('_', '-'):<20} {env_name(name):<28} {f.metadata['help']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kioskd", description="An offline AI appliance for self-service terminals.",
        epilog=_settings_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kioskd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the daemon (HTTP, WebSocket and OpenAI API)")
    add_arguments(serve)
    pull = commands.add_parser("pull", help="download a model from the catalogue and verify it")
    pull.add_argument("name", nargs="?", default=None, help="catalogue name (default: MODEL_NAME)")
    pull.add_argument("--list", action="store_true", help="list the catalogue and exit")
    add_arguments(pull)
    doctor = commands.add_parser("doctor", help="check the settings, model, hardware, state, port and voice set-up")
    doctor.add_argument("--json", action="store_true", help="print the checks as a JSON list")
    add_arguments(doctor)
    knowledge = commands.add_parser("knowledge", help="work with a venue knowledge folder")
    knowledge_commands = knowledge.add_subparsers(dest="knowledge_command", metavar="ACTION", required=True)
    check = knowledge_commands.add_parser("check", help="validate a knowledge folder and list what it indexes")
    check.add_argument("folder", type=Path, metavar="DIR", help="the folder of Markdown files")
    commands.add_parser("operator-pin", help="read an operator PIN from stdin (or a prompt) and print the salted "
                        "hash to set as operator_pin")
    add_mirror_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "operator-pin":
        from daemon.visits.pin_command import run_operator_pin

        return run_operator_pin()
    if args.command == "knowledge":
        from daemon.knowledge.check_command import run_check

        return run_check(args.folder)
    if args.command == "mirror":
        from daemon.mirror.command import run_mirror

        logs.configure("info")
        return run_mirror(args)
    if args.command == "doctor":
        from daemon.doctor import run_doctor

        return run_doctor(args)  # It loads the settings itself: an invalid setting is one of its findings.
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        sys.stderr.write(f"kioskd: {exc}\n")  # Logging is not configured yet.
        return 2
    logs.configure(settings.log_level)
    if args.command == "pull":
        from daemon.pull_command import run_pull

        return run_pull(settings, args.name, list_only=args.list)
    from daemon.server import serve

    return asyncio.run(serve(settings, reload_settings=lambda: settings_from_args(args)))
