"""Start-up failures of the real daemon process: each exits non-zero with a clear message."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, Daemon, start_daemon


def _exit_of(daemon: Daemon, timeout: float = 30.0) -> int:
    return daemon.proc.wait(timeout)


def test_missing_model_file_exits_1_naming_the_file(daemon_factory: Callable[..., Daemon],
                                                    tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    d = daemon_factory("--model", str(missing), wait=False)
    assert _exit_of(d) == 1
    assert str(missing) in d.log() and "kioskd pull" in d.log()


def test_corrupt_model_file_exits_1(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x00garbage" * 1000)
    d = daemon_factory("--model", str(corrupt), wait=False)
    assert _exit_of(d) == 1
    assert "cannot load model" in d.log()


def test_port_in_use_exits_2(tmp_path: Path, test_model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Its own state directory and no voice path, like every other daemon of the tests (not the user's).
        d = start_daemon(tmp_path, "--model", str(test_model), port=port, wait=False)
        assert _exit_of(d, timeout=60) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in d.log()


def test_invalid_setting_names_the_setting(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "daemon", "serve"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "KIOSKD_N_CTX": "lots", "HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "'n_ctx'" in done.stderr and "KIOSKD_N_CTX" in done.stderr and "'lots'" in done.stderr


def test_help_documents_every_setting() -> None:
    from daemon.settings import FIELDS, env_name

    top = subprocess.run([sys.executable, "-m", "daemon", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    serve = subprocess.run([sys.executable, "-m", "daemon", "serve", "--help"], capture_output=True,
                           text=True, cwd=ROOT, check=True).stdout
    for name in FIELDS:
        flag = "--" + name.replace("_", "-")
        assert flag in top and env_name(name) in top, name
        assert flag in serve, name
    for flag in ("--model", "--host", "--port", "--config"):
        assert flag in serve
