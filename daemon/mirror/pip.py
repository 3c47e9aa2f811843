"""`pip` as a subprocess of this interpreter, failing with the tail of its output."""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from pathlib import Path

from daemon.mirror.errors import MirrorError

_LOGGER = logging.getLogger(__name__)
_TAIL_LINES = 20


def run_pip(*args: str | Path, what: str, timeout: float = 1800, env: dict[str, str] | None = None) -> str:
    """Run `python -m pip ARGS`; its stdout, or MirrorError naming `what` with the end of pip's output."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *map(str, args)]
    _LOGGER.debug("running %s", shlex.join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired as exc:
        raise MirrorError(f"{what}: pip took longer than {timeout:.0f} s") from exc
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        tail = "\n".join(line for line in lines[-_TAIL_LINES:] if "is ignored: it is neither" not in line)
        raise MirrorError(f"{what} failed (pip exit {result.returncode}):\n{tail}")
    return result.stdout


def wheel_cache() -> Path:
    """pip's cache of wheels it built from source (where `pip install` left llama-cpp-python's)."""
    return Path(run_pip("cache", "dir", what="pip cache dir").strip()) / "wheels"
