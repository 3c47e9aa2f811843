"""kioskd on arm64, under qemu-user emulation: an arm64 Debian 12 root, kioskd installed in it from an aarch64
wheelhouse as the fleet installs it (--no-index --only-binary=:all: --require-hashes), `kioskd serve` on the
SmolLM2 test model on a loopback port, /readyz, and a real answer through /v1/chat/completions.

Slow: the first run builds the root (debootstrap, minutes) and the Pi wheels (daemon.mirror.cross_build: the
llama.cpp cross compile, tens of minutes on two cores); later runs reuse both from .cache/arm64. Each step's time
is logged and written to .cache/arm64/timings.json.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.mirror import cross_build
from tests import arm64_root
from tests.conftest import TEST_MODEL, free_port, pulled_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(4 * 3600)]
_LOGGER = logging.getLogger(__name__)
READY_TIMEOUT_S = 1800
ANSWER_TIMEOUT_S = 1800
MODEL_INSIDE = "/opt/kioskd/models"


class Steps:
    """Times each step of the run; logged and kept in .cache/arm64/timings.json."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, started: float) -> None:
        self.seconds[name] = round(time.monotonic() - started, 1)
        _LOGGER.info("arm64 step %s: %.1f s", name, self.seconds[name])
        path = arm64_root.CACHE / "timings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.seconds, indent=2) + "\n")


@pytest.fixture(scope="module")
def emulated_root() -> Iterator[Path]:
    reason = arm64_root.skip_reason()
    if reason:
        pytest.skip(f"no arm64 emulation here: {reason}")
    root = arm64_root.CACHE / "run" / "root"
    yield root
    arm64_root.remove_root(root)


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_ready(port: int, daemon: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"kioskd exited under emulation:\n{log.read_text()[-4000:]}"
        try:
            if _get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError(f"no /readyz within {READY_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _ask(port: int) -> dict[str, object]:
    body = json.dumps({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6,
                       "temperature": 0}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT_S) as response:
        assert response.status == 200
        answer: dict[str, object] = json.loads(response.read())
    return answer


def _prepare(root: Path, tmp_path: Path, steps: Steps) -> None:
    """Root, mirror, install and model: each step timed."""
    started = time.monotonic()
    arm64_root.base_root()
    steps.run("base_root", started)
    started = time.monotonic()
    arm64_root.fresh_root(root)
    steps.run("fresh_copy", started)
    model = pulled_model(TEST_MODEL)
    started = time.monotonic()
    fleet_vars = arm64_root.build_mirror(tmp_path / "mirror", model)
    steps.run("mirror_build", started)
    started = time.monotonic()
    output = arm64_root.install(root, tmp_path / "mirror", fleet_vars)
    steps.run("pip_install", started)
    _LOGGER.info("pip in the arm64 root:\n%s", output[-2000:])
    (root / MODEL_INSIDE.lstrip("/")).mkdir(parents=True, exist_ok=True)
    os.link(tmp_path / "mirror" / fleet_vars["kioskd_model_url"], root / MODEL_INSIDE.lstrip("/") / model.name)


def _installed_code_is_aarch64(root: Path) -> None:
    """The root runs aarch64 code, and the llama.cpp the venv loads is the AArch64 build."""
    assert cross_build.in_root(root, "uname", "-m").strip() == "aarch64"
    site = next((root / arm64_root.VENV.lstrip("/") / "lib").glob("python3.*/site-packages"))
    library = site / "llama_cpp" / "lib" / "libllama.so"
    assert library.read_bytes()[18:20] == (183).to_bytes(2, "little"), "libllama.so is not AArch64"
    # sounddevice finds Debian's arm64 libportaudio2 by name (ldconfig), as on a Pi: no path to set per arch.
    check = ("import llama_cpp, systemd.journal, numpy, onnxruntime, vosk, sounddevice; "
             "print(llama_cpp.__version__, sounddevice._libname)")
    printed = cross_build.in_root(root, f"{arm64_root.VENV}/bin/python", "-c", check, timeout=900).split()
    assert printed[0] == cross_build.kioskd_pins()["llama-cpp-python"]
    assert "libportaudio.so" in printed[1], printed


def test_kioskd_answers_on_an_emulated_arm64_root(emulated_root: Path, tmp_path: Path) -> None:
    steps = Steps()
    _prepare(emulated_root, tmp_path, steps)
    model_name = pulled_model(TEST_MODEL).name
    port = free_port()
    log = tmp_path / "kioskd-arm64.log"
    with arm64_root.mounted(emulated_root):
        started = time.monotonic()
        _installed_code_is_aarch64(emulated_root)
        steps.run("imports", started)
        started = time.monotonic()
        daemon = arm64_root.serve(emulated_root, f"{MODEL_INSIDE}/{model_name}", port, log)
        try:
            _wait_ready(port, daemon, log)
            steps.run("serve_until_ready", started)
            started = time.monotonic()
            answer = _ask(port)
            steps.run("chat_completion", started)
        finally:
            daemon.terminate()
            daemon.wait(60)
    choice = answer["choices"][0]  # type: ignore[index]
    assert choice["message"]["content"].strip(), answer
    assert answer["usage"]["completion_tokens"] > 0, answer  # type: ignore[index]
    _LOGGER.info("arm64 answer: %r (%s)", choice["message"]["content"], steps.seconds)
