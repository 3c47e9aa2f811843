"""Shared fixtures: the real SmolLM2 test model and a real daemon process on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from daemon.security import is_loopback

ROOT = Path(__file__).resolve().parent.parent
TEST_MODEL = "smollm2-135m-instruct"
DEFAULT_MODEL = "qwen2.5-0.5b-instruct"
API_TOKEN = "test-api-token-0123456789abcdef"
"""The API token a daemon started by `start_daemon` has unless told otherwise; `Daemon.get` sends it."""
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def pulled_model(name: str) -> Path:
    """A catalogue model, fetched once into .cache/models with the project's own `pull`."""
    from daemon.models.pull import pull_model

    models_dir = Path(os.environ.get("KIOSKD_TEST_MODELS_DIR", ROOT / ".cache" / "models"))
    return pull_model(name, models_dir, progress=False).path


@pytest.fixture(scope="session")
def test_model() -> Path:
    return pulled_model(TEST_MODEL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lan_address() -> str | None:
    """An IPv4 address of this machine that is not loopback and that a socket can bind, or None."""
    candidates: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, contextlib.suppress(OSError):
        probe.connect(("198.51.100.1", 9))  # UDP connect sends nothing; it only picks the outgoing address
        candidates.append(str(probe.getsockname()[0]))
    with contextlib.suppress(OSError):
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    for address in candidates:
        if is_loopback(address):
            continue
        with socket.socket() as sock:
            try:
                sock.bind((address, 0))
            except OSError:
                continue
        return address
    return None


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET with the default API token (the whole history archive)."""
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=AUTH),
                                        timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon ignored signal {sig} for {timeout} s:\n{self.log()}") from None
        return self.proc.returncode


def start_daemon(tmp: Path, *args: str, env: dict[str, str] | None = None, wait: bool = True,
                 port: int | None = None) -> Daemon:
    port = port or free_port()
    log_path = tmp / f"daemon-{port}.log"
    argv = [sys.executable, "-m", "daemon", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--state-dir", str(tmp / "state"), *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
    environ["KIOSKD_VOICE"] = "false"  # Text-only unless a test asks for the voice path (it loads big models).
    # What was stored stays readable after its connection closed (tests of other history modes ask for them).
    environ["KIOSKD_HISTORY_MODE"] = "keep"
    environ["KIOSKD_API_TOKEN"] = API_TOKEN
    environ.update(env or {})
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=environ)
    daemon = Daemon(proc, port, log_path, argv)
    if wait:
        daemon.wait_ready()
    return daemon


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def factory(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Daemon:
        daemon = start_daemon(tmp_path, *args, env=env, wait=wait)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.stop(signal.SIGKILL)
