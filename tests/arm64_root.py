"""Helpers of the arm64 tests: an arm64 Debian 12 root run under qemu-user emulation, kioskd installed into a venv
in it from an aarch64 wheelhouse the way the kioskd_daemon role installs it (--no-index --only-binary=:all:
--require-hashes, one requirements file: the kioskd wheel with its extras and the hashed lock), and `kioskd serve`
run there on a loopback port.

- `base` (under .cache/arm64, built once by debootstrap, minutes under emulation): minbase bookworm plus the
  Debian packages the playbook installs for the daemon and audio (python3, python3-venv, libgomp1, libportaudio2).
  Each run works in a fresh copy, so every run installs on a root that never saw kioskd.
- The wheelhouse: the kioskd wheel, the source-only packages (daemon.mirror.cross_build for the compiled ones, a
  universal wheel of srt), and everything else resolved by `pip download` for aarch64/cp311 from PyPI.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from daemon.mirror import cross_build
from daemon.mirror.targets import Target, parse_wheel_name
from daemon.models.download import sha256_file

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CACHE = cross_build.cache_dir()
BASE = CACHE / "base"
# kioskd_daemon_packages and kioskd_audio_packages of the playbook, less what only Ansible needs.
RUNTIME_PACKAGES = ("python3", "python3-venv", "libgomp1", "libportaudio2", "ca-certificates")
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


def fresh_root(dest: Path) -> Path:
    """A copy of the base root at `dest`: an arm64 board that was never provisioned."""
    base = base_root()
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run("cp", "-a", "--reflink=auto", base, dest)
    return dest


def build_wheelhouse(wheels: Path) -> Path:
    """The aarch64/cp311 wheelhouse in `wheels` and its requirements file (as the role templates it, with paths
    inside the root under WHEELS); returns the requirements file."""
    wheels.mkdir(parents=True, exist_ok=True)
    _run(BIN / "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT, timeout=600)
    (kioskd_wheel,) = wheels.glob("kioskd-*.whl")
    cross_build.build_source_wheels(TARGET.arch, TARGET.python, wheels)
    from importlib.metadata import version

    _run(BIN / "pip", "wheel", "-q", "--no-deps", "-w", wheels, f"srt=={version('srt')}", timeout=600)
    _run(BIN / "pip", "download", "-q", *TARGET.pip_args(), "--find-links", wheels, "-d", wheels,
         f"{kioskd_wheel}[{','.join(EXTRAS)}]", timeout=1800)
    lines = [f"{WHEELS}/{kioskd_wheel.name}[{','.join(EXTRAS)}] --hash=sha256:{sha256_file(kioskd_wheel)}"]
    for wheel in sorted(wheels.glob("*.whl")):
        name = parse_wheel_name(wheel.name)
        if wheel != kioskd_wheel:
            assert name.fits(TARGET), f"{wheel.name} does not install on {TARGET.name}"
            lines.append(f"{name.project}=={name.version} --hash=sha256:{sha256_file(wheel)}")
    requirements = wheels / "requirements.txt"
    requirements.write_text("".join(f"{line}\n" for line in lines))
    return requirements


def install(root: Path, wheels: Path) -> str:
    """kioskd installed into VENV in `root` from `wheels` (copied to WHEELS) as the role does; pip's output."""
    inside = root / WHEELS.lstrip("/")
    shutil.copytree(wheels, inside, dirs_exist_ok=True)
    cross_build.in_root(root, "python3", "-m", "venv", VENV, timeout=900)
    return cross_build.in_root(root, f"{VENV}/bin/pip", "install", "--no-cache-dir", "--no-index",
                               "--only-binary=:all:", "--require-hashes", "--find-links", WHEELS,
                               "-r", f"{WHEELS}/requirements.txt", timeout=3600)


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[Path]:
    """/proc and /dev of this machine mounted in `root` while the block runs (Python and llama.cpp need both)."""
    done: list[Path] = []
    try:
        for kind, point in (("proc", "proc"), ("dev", "dev")):
            target = root / point
            target.mkdir(exist_ok=True)
            if kind == "proc":
                _run("mount", "-t", "proc", "proc", target)
            else:
                _run("mount", "--bind", "/dev", target)
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
