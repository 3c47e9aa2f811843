"""A real llama.cpp `llama-server` on 127.0.0.1, the upstream inference server kioskd's upstream engine talks to.

The binary is built once per machine by scripts/build_llama_server.sh from the llama.cpp vendored in the pinned
llama-cpp-python sdist (the same llama.cpp the local engine runs) and cached under .cache/llama-server-<key>/.
`make test` and `make test-upstream` build it before pytest starts, so no test's time limit covers the build.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.conftest import ROOT, free_port

BUILD_SCRIPT = ROOT / "scripts" / "build_llama_server.sh"
CONTEXT_PER_SLOT = 2048
"""Tokens of context each parallel slot gets (llama-server splits `-c` evenly between its slots)."""
START_TIMEOUT = 120.0
THREADS = 2


@functools.cache
def llama_server_binary() -> Path:
    """The cached `llama-server`, built first if this machine has none (several minutes, once)."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT.name} exited {result.returncode}:\n{result.stderr[-4000:]}")
    binary = Path(result.stdout.strip().splitlines()[-1])
    if not binary.is_file():
        raise RuntimeError(f"{BUILD_SCRIPT.name} printed {binary}, which is not a file")
    return binary


class LlamaServer:
    """`llama-server` serving `model` with `parallel` slots; a context manager that starts and stops it.

    `.kill()` is the crash a failover test needs (SIGKILL: no goodbye on open streams); `.start()` brings it back
    on the same port, so a client configured with `.url` finds it again.
    """

    def __init__(self, model: Path, *, parallel: int = 1, port: int = 0, extra: Sequence[str] = ()) -> None:
        self.model = model
        self.parallel = parallel
        self.port = port or free_port()
        self.extra = tuple(extra)
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (what `upstream_url` is set to)."""
        return f"{self.origin}/v1"

    def argv(self) -> list[str]:
        return [
            str(llama_server_binary()), "--model", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
            "--parallel", str(self.parallel), "--ctx-size", str(CONTEXT_PER_SLOT * self.parallel),
            "--threads", str(THREADS), "--threads-batch", str(THREADS), "--slots", "--metrics", "--no-webui",
            *self.extra,
        ]

    def start(self) -> LlamaServer:
        """Starts the server and returns once its /health answers 200 (the model is loaded)."""
        if self.running:
            raise RuntimeError("llama-server is already running")
        argv = self.argv()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"llama-server exited {self._exit_code()} while starting:\n{self.log()[-4000:]}")
            if self._health_status() == 200:
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"llama-server was not healthy within {START_TIMEOUT:.0f} s:\n{self.log()[-4000:]}")

    def _health_status(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.origin}/health", timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)  # 503 while the model loads
        except (OSError, TimeoutError):
            return 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("llama-server has not been started")
        return self._proc.pid

    def _exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled cable looks to its clients; waits until the process is gone."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        """A clean stop (SIGTERM), SIGKILL if it has not exited within 10 s."""
        if self._proc is None or not self.running:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.origin}{path}", timeout=5) as response:
            return json.loads(response.read())

    def slots(self) -> list[dict[str, Any]]:
        """GET /slots: one object per slot, with `is_processing` true while it works on a request."""
        slots: list[dict[str, Any]] = self.get_json("/slots")
        return slots

    def is_idle(self) -> bool:
        """True when no slot is processing a request (a cancelled stream has been let go)."""
        return not any(slot.get("is_processing") for slot in self.slots())

    def metrics(self) -> str:
        """GET /metrics (Prometheus text)."""
        with urllib.request.urlopen(f"{self.origin}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)
