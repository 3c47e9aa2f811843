"""Helpers of the arm64 tests: an arm64 Debian 12 root run under qemu-user emulation, kioskd installed into a venv
in it from an aarch64 wheelhouse the way the kioskd_daemon role installs it (--no-index --only-binary=:all:
--require-hashes, one requirements file: the kioskd wheel with its extras and the hashed lock), and `kioskd serve`
run there on a loopback port.

- `base` (under .cache/arm64, built once by debootstrap, minutes under emulation): minbase bookworm plus the
  Debian packages the playbook installs for the daemon and audio (python3, python3-venv, libgomp1, libportaudio2).
  Each run works in a fresh copy, so every run installs on a root that never saw kioskd.
- The wheelhouse: the offline mirror of `kioskd mirror build --arch aarch64` (the kioskd wheel, the hashed lock
  for aarch64-cp311: the source-only packages from daemon.mirror.cross_build, the rest from PyPI's aarch64
  wheels), installed with the requirements file the kioskd_daemon role writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daemon.mirror import cross_build
from daemon.mirror.targets import Target

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CACHE = cross_build.cache_dir()
BASE = CACHE / "base"
# kioskd_daemon_packages and kioskd_audio_packages of the playbook, less what only Ansible needs, plus libatomic1:
# vosk's aarch64 libvosk.so links libatomic.so.1 (its x86_64 build does not), which minbase lacks.
RUNTIME_PACKAGES = ("python3", "python3-venv", "libgomp1", "libportaudio2", "libatomic1", "ca-certificates")
TARGET = Target("aarch64", "3.11")
EXTRAS = ("llm", "voice", "systemd")
VENV = "/opt/kioskd/venv"
WHEELS = "/opt/kioskd/wheels"


def skip_reason() -> str | None:
    """Why the emulated tests cannot run here (None when they can)."""
    return cross_build.emulation_problem()


def cached_source_wheels() -> list[Path]:
    """The Pi wheels of the compiled source-only packages already in the cache (none when never built)."""
    pins = cross_build.kioskd_pins()
    found = [cross_build.cached_wheel(project, pins[project]) for project in ("llama-cpp-python", "systemd-python")]
    return [path for path in found if path is not None]


def base_root() -> Path:
    return cross_build.arm64_root(BASE, RUNTIME_PACKAGES)


def remove_root(root: Path) -> None:
    """Delete a run's root, unless something is still mounted in it: rmtree would walk into a bind-mounted /dev
    and delete this machine's device nodes."""
    still = [point for point in (root / "proc", root / "dev", root / "sys") if os.path.ismount(point)]
    if still:
        raise RuntimeError(f"not removing {root}: {', '.join(map(str, still))} still mounted")
    shutil.rmtree(root, ignore_errors=True)


def fresh_root(dest: Path) -> Path:
    """A copy of the base root at `dest`: an arm64 board that was never provisioned."""
    base = base_root()
    if dest.exists():
        remove_root(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run("cp", "-a", "--reflink=auto", base, dest)
    return dest


def build_mirror(mirror: Path, model: Path) -> dict[str, Any]:
    """The fleet's offline mirror for aarch64 made by the product command (`kioskd mirror build --arch aarch64`,
    which calls daemon.mirror.cross_build for the compiled source-only wheels), without voice files (the test
    serves text only); returns its fleet-vars.json."""
    items = mirror.parent / "no-voice.json"
    items.write_text(json.dumps({"kioskd_voice_vosk_models": [], "kioskd_voice_piper_voices": []}))
    _run(BIN / "kioskd", "mirror", "build", mirror, "--arch", TARGET.arch, "--python", TARGET.python,
         "--model", model, "--voice-items", items, timeout=4 * 3600)
    _run(BIN / "kioskd", "mirror", "verify", mirror)
    loaded: dict[str, Any] = json.loads((mirror / "fleet-vars.json").read_text())
    return loaded


def requirements(fleet_vars: dict[str, Any], architecture: str) -> str:
    """The requirements file the kioskd_daemon role templates for a host of `architecture` (Ansible's fact):
    the kioskd wheel with its extras, then that architecture's lock (paths inside the root)."""
    locks = fleet_vars["kioskd_daemon_requirements_by_arch"]
    assert architecture in locks, f"the mirror has no lock for {architecture}, only for {sorted(locks)}"
    wheel = Path(fleet_vars["kioskd_daemon_wheel_url"]).name
    lines = [f"{WHEELS}/{wheel}[{','.join(EXTRAS)}] --hash=sha256:{fleet_vars['kioskd_daemon_wheel_sha256']}",
             *locks[architecture]]
    return "".join(f"{line}\n" for line in lines)


def install(root: Path, mirror: Path, fleet_vars: dict[str, Any]) -> str:
    """kioskd installed into VENV in `root` from the mirror's wheels/ (copied to WHEELS) as the role does, with
    --no-index --only-binary=:all: --require-hashes; pip's output."""
    inside = root / WHEELS.lstrip("/")
    shutil.copytree(mirror / "wheels", inside, dirs_exist_ok=True)
    # Ansible's `architecture` fact is the host Python's platform.machine(): the key the role picks the lock by.
    architecture = cross_build.in_root(root, "python3", "-c", "import platform; print(platform.machine())").strip()
    (inside / "requirements.txt").write_text(requirements(fleet_vars, architecture))
    cross_build.in_root(root, "python3", "-m", "venv", VENV, timeout=900)
    return cross_build.in_root(root, f"{VENV}/bin/pip", "install", "--no-cache-dir", "--no-index",
                               "--only-binary=:all:", "--require-hashes", "--find-links", WHEELS,
                               "-r", f"{WHEELS}/requirements.txt", timeout=3600)


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[Path]:
    """/proc and /dev mounted in `root` while the block runs (Python and llama.cpp read them)."""
    done: list[Path] = []
    try:
        # Not /sys: this machine's is x86's, and onnxruntime's cpuinfo, reading its CPU topology beside qemu's
        # /proc/cpuinfo, crashes (SIGSEGV on import). Without it cpuinfo only warns and falls back.
        for point in ("proc", "dev"):
            target = root / point
            target.mkdir(exist_ok=True)
            if point == "proc":
                _run("mount", "-t", "proc", "proc", target)
            else:
                _run("mount", "--bind", f"/{point}", target)
            done.append(target)
        yield root
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def serve(root: Path, model_inside: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`kioskd serve` of the venv in `root` (emulated) on 127.0.0.1:`port`, text only; its output goes to `log`."""
    argv = ["chroot", str(root), "/usr/bin/env", "-i", f"PATH={cross_build.CHROOT_PATH}", "LC_ALL=C.UTF-8",
            "HOME=/root", "KIOSKD_VOICE=false", "KIOSKD_THREADS=2", f"{VENV}/bin/kioskd", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--model", model_inside, "--state-dir", "/var/lib/kioskd",
            "--n-ctx", "1024"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def _run(*args: str | Path, timeout: float = 600) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout
