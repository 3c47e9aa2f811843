"""Wheels for a Raspberry Pi (Debian 12 / Raspberry Pi OS bookworm, aarch64, CPython 3.11) of the compiled
packages PyPI ships only as source, built on an x86_64 machine.

- llama-cpp-python: cross-compiled. Its shared libraries are loaded through ctypes and need no Python headers of
  the target, so pip builds the sdist here with Debian's aarch64 cross compilers (gcc-aarch64-linux-gnu,
  g++-aarch64-linux-gnu) named in CMAKE_ARGS; the wheel is then tagged linux_aarch64. One baseline build for every
  Pi: armv8-a (the Pi 4's Cortex-A72 has no dotprod or fp16 arithmetic, so a dotprod build would die there with
  SIGILL), tuned for the A72. ggml's runtime variant selection (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS) would
  give the Pi 5's Cortex-A76 its dotprod kernels, but llama-cpp-python 0.3.36 installs only a fixed list of
  libraries (libggml-cpu.so, not the libggml-cpu-<variant>.so files) and never calls ggml_backend_load_all(), so
  such a wheel would hold no CPU backend at all.
- systemd-python: a C extension that needs the target's Python 3.11 headers and libsystemd, so it is built inside
  an arm64 Debian 12 root (debootstrap) run under qemu-user emulation (qemu-user-static registered with binfmt_misc).

Built wheels are kept under the cache (.cache/arm64/wheels/ of the source tree, or KIOSKD_ARM64_CACHE) by version,
so the next call returns at once.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from daemon.mirror.errors import MirrorError
from daemon.mirror.pip import run_pip
from daemon.mirror.targets import parse_wheel_name

_LOGGER = logging.getLogger(__name__)

ARCH = "aarch64"
PYTHON = "3.11"  # Debian 12's python3: the only Python a bookworm kiosk has
PLATFORM_TAG = "linux_aarch64"
SUITE = "bookworm"
_ELF_AARCH64 = 183
_ELF_MACHINES = {3: "x86", 40: "ARM", 62: "x86-64", 183: "AArch64", 243: "RISC-V"}
_CROSS_CC = "aarch64-linux-gnu-gcc"
_CROSS_CXX = "aarch64-linux-gnu-g++"
# Baseline armv8-a code tuned for the Pi 4's Cortex-A72, which also runs on the Pi 5's A76 (see the docstring).
LLAMA_CMAKE_ARGS = (
    "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
    f"-DCMAKE_C_COMPILER={_CROSS_CC}", f"-DCMAKE_CXX_COMPILER={_CROSS_CXX}",
    "-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8-a",
    "-DCMAKE_C_FLAGS=-mtune=cortex-a72", "-DCMAKE_CXX_FLAGS=-mtune=cortex-a72",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
)
# What building systemd-python needs in the arm64 root; pip, setuptools and wheel from Debian, so the build
# needs no network inside the root.
BUILD_ROOT_PACKAGES = ("python3-dev", "python3-pip", "python3-setuptools", "python3-wheel", "gcc", "libc6-dev",
                       "libsystemd-dev", "pkg-config")
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BUILD_TIMEOUT_S = 3 * 3600


def build_source_wheels(arch: str, python: str, dest: Path) -> list[Path]:
    """Wheels for `arch`/`python` of llama-cpp-python and systemd-python at kioskd's pinned versions, copied into
    `dest`; their paths there. MirrorError when this target or this machine cannot build them."""
    if arch != ARCH or python != PYTHON:
        raise MirrorError(f"the cross builder makes wheels for {ARCH} with CPython {PYTHON} (Debian 12 on a "
                          f"Raspberry Pi), not {arch} with {python}: build them on such a machine with "
                          "`pip wheel` and pass that folder with --source-wheels DIR")
    pins = kioskd_pins()
    built = [llama_wheel(pins["llama-cpp-python"]), systemd_wheel(pins["systemd-python"])]
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for wheel in built:
        copy = dest / wheel.name
        if copy.resolve() != wheel.resolve():
            shutil.copy2(wheel, copy)
        copies.append(copy)
    return copies


def cache_dir() -> Path:
    """Where built wheels and the arm64 build root are kept."""
    if os.environ.get("KIOSKD_ARM64_CACHE"):
        return Path(os.environ["KIOSKD_ARM64_CACHE"])
    source_tree = Path(__file__).resolve().parents[2]
    if (source_tree / "pyproject.toml").is_file():
        return source_tree / ".cache" / "arm64"
    return Path.home() / ".cache" / "kioskd" / "arm64"


def kioskd_pins() -> dict[str, str]:
    """The exact versions kioskd's extras pin (`name==version`), by normalised project name."""
    pins = {}
    for requirement in importlib.metadata.requires("kioskd") or []:
        found = re.match(r"^([A-Za-z0-9._-]+)\s*==\s*([^\s;,]+)", requirement)
        if found:
            pins[re.sub(r"[-_.]+", "-", found[1]).lower()] = found[2]
    for needed in ("llama-cpp-python", "systemd-python"):
        if needed not in pins:
            raise MirrorError(f"kioskd's metadata pins no {needed} version; reinstall kioskd (pip install -e .)")
    return pins


def cached_wheel(project: str, version: str) -> Path | None:
    """The wheel of `project` `version` for the Pi in the cache, if built before."""
    for path in sorted((cache_dir() / "wheels").glob("*.whl")):
        name = parse_wheel_name(path.name)
        if name.project == project and name.version == version and name.platform == PLATFORM_TAG:
            return path
    return None


def llama_wheel(version: str) -> Path:
    """llama-cpp-python `version` for aarch64: from the cache, else cross-compiled (tens of minutes on 2 cores)."""
    found = cached_wheel("llama-cpp-python", version)
    if found:
        return found
    missing = [tool for tool in (_CROSS_CC, _CROSS_CXX, "cmake") if shutil.which(tool) is None]
    if missing:
        raise MirrorError(f"cross-compiling llama-cpp-python needs {', '.join(missing)}: apt-get install "
                          "gcc-aarch64-linux-gnu g++-aarch64-linux-gnu cmake")
    env = {**os.environ, "CMAKE_ARGS": " ".join(LLAMA_CMAKE_ARGS), "_PYTHON_HOST_PLATFORM": "linux-aarch64",
           "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")}
    _LOGGER.info("cross-compiling llama-cpp-python %s for aarch64 (tens of minutes)", version)
    with tempfile.TemporaryDirectory(prefix="kioskd-arm64-") as tmp:
        # No cache: pip's wheel cache would hand back this machine's own x86_64 build of the same sdist.
        run_pip("wheel", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python", "-w", tmp,
                f"llama-cpp-python=={version}", what=f"cross-compiling llama-cpp-python {version}",
                timeout=_BUILD_TIMEOUT_S, env=env)
        (built,) = Path(tmp).glob("*.whl")
        return _keep(retag(built, PLATFORM_TAG))


def systemd_wheel(version: str) -> Path:
    """systemd-python `version` for aarch64/cp311: from the cache, else built in the arm64 root under qemu."""
    found = cached_wheel("systemd-python", version)
    if found:
        return found
    root = arm64_root(cache_dir() / "build-root", BUILD_ROOT_PACKAGES)
    work = root / "tmp" / "kioskd-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        run_pip("download", "--no-deps", "--no-binary", ":all:", "-d", work, f"systemd-python=={version}",
                what=f"downloading the systemd-python {version} sources")
        (sdist,) = work.glob("systemd*python-*.tar.gz")
        _LOGGER.info("building systemd-python %s in the arm64 root (emulated)", version)
        in_root(root, "python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                "-w", "/tmp/kioskd-build/out", f"/tmp/kioskd-build/{sdist.name}", timeout=_BUILD_TIMEOUT_S)
        (built,) = (work / "out").glob("*.whl")
        return _keep(built)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _keep(wheel: Path) -> Path:
    """`wheel` moved into the cache, after checking it is tagged for the Pi and holds only AArch64 code."""
    name = parse_wheel_name(wheel.name)
    if name.platform != PLATFORM_TAG:
        raise MirrorError(f"{wheel.name} is tagged {name.platform}, not {PLATFORM_TAG}")
    foreign = {member: machine for member, machine in elf_machines(wheel).items() if machine != "AArch64"}
    if foreign:
        raise MirrorError(f"{wheel.name} holds code that is not AArch64: {foreign}")
    kept = cache_dir() / "wheels" / wheel.name
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(wheel, kept)
    return kept


def elf_machines(wheel: Path) -> dict[str, str]:
    """The machine (ELF e_machine: AArch64, x86-64, ...) of every ELF file in `wheel`, by member name."""
    machines = {}
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            with archive.open(member) as stream:
                header = stream.read(20)
            if len(header) < 20 or header[:4] != b"\x7fELF":
                continue
            number = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
            machines[member.filename] = _ELF_MACHINES.get(number, f"e_machine {number}")
    return machines


def retag(wheel: Path, platform_tag: str) -> Path:
    """`wheel` renamed and its WHEEL tags rewritten for `platform_tag` (as `wheel tags --platform-tag`); the RECORD
    gets the new WHEEL file's hash. Returns the new path (the old file is removed)."""
    name = parse_wheel_name(wheel.name)
    if name.platform == platform_tag:
        return wheel
    retagged = wheel.with_name(f"{name.name}-{name.version}-{name.python}-{name.abi}-{platform_tag}.whl")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(retagged, "w", zipfile.ZIP_DEFLATED) as target:
        record = next(n for n in source.namelist() if n.endswith(".dist-info/RECORD"))
        metadata = record.rsplit("/", 1)[0] + "/WHEEL"
        lines = []
        for member in source.infolist():
            if member.filename == record:
                continue
            data = source.read(member)
            if member.filename == metadata:
                data = _retagged_metadata(data.decode(), name.python, name.abi, platform_tag).encode()
            target.writestr(member, data)  # the ZipInfo keeps each file's mode (the .so files stay executable)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"{member.filename},sha256={digest},{len(data)}")
        lines.append(f"{record},,")
        target.writestr(source.getinfo(record), "\n".join(lines) + "\n")
    wheel.unlink()
    return retagged


def _retagged_metadata(text: str, pythons: str, abis: str, platform_tag: str) -> str:
    kept = [line for line in text.splitlines() if line and not line.startswith("Tag:")]
    tags = [f"Tag: {py}-{abi}-{platform_tag}" for py in pythons.split(".") for abi in abis.split(".")]
    return "\n".join(kept + tags) + "\n"


def emulation_problem() -> str | None:
    """Why this machine cannot run an arm64 Debian root (None when it can): root, debootstrap, qemu and binfmt."""
    if os.geteuid() != 0:
        return "debootstrap and chroot need root"
    if shutil.which("debootstrap") is None:
        return "no debootstrap (apt-get install debootstrap)"
    registration = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not registration.is_file():
        return ("no qemu-aarch64 in binfmt_misc (apt-get install qemu-user-static binfmt-support; "
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)")
    text = registration.read_text()
    if "enabled" not in text.splitlines()[0]:
        return "qemu-aarch64 is registered with binfmt_misc but disabled"
    if "F" not in next((line for line in text.splitlines() if line.startswith("flags:")), ""):
        return "qemu-aarch64 is registered without the F flag: a chroot cannot reach the interpreter"
    return None


def arm64_root(path: Path, packages: tuple[str, ...]) -> Path:
    """An arm64 Debian 12 minbase root at `path` with `packages`, made by debootstrap (its second stage runs under
    qemu) unless `path` already holds one made with the same list. Minutes under emulation."""
    marker = path / ".kioskd-arm64-root"
    wanted = f"{SUITE} arm64 {' '.join(packages)}"
    if marker.is_file() and marker.read_text().strip() == wanted:
        return path
    problem = emulation_problem()
    if problem:
        raise MirrorError(f"cannot make an arm64 Debian root here: {problem}")
    building = path.with_name(path.name + ".tmp")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    _run("debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(packages)}", SUITE, building,
         apt_mirror(), timeout=_BUILD_TIMEOUT_S)
    (building / marker.name).write_text(wanted + "\n")
    shutil.rmtree(path, ignore_errors=True)
    building.rename(path)
    return path


def in_root(root: Path, *args: str, timeout: float = 600) -> str:
    """Run a command inside the arm64 `root` (emulated) with a clean environment; its stdout."""
    return _run("chroot", root, "/usr/bin/env", "-i", f"PATH={CHROOT_PATH}", "LC_ALL=C.UTF-8", "HOME=/root",
                "DEBIAN_FRONTEND=noninteractive", *args, timeout=timeout)


def apt_mirror() -> str:
    """The Debian archive this machine's apt uses (first non-security http(s) URI), for debootstrap."""
    sources = [*sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
               *sorted(Path("/etc/apt/sources.list.d").glob("*.list")), Path("/etc/apt/sources.list")]
    for source in sources:
        text = source.read_text(errors="replace") if source.is_file() else ""
        for found in re.finditer(r"^\s*(?:URIs:|deb\s+(?:\[[^]]*\]\s+)?)\s*(\S+)", text, flags=re.MULTILINE):
            uri = found[1]
            if uri.startswith(("http://", "https://")) and "security" not in uri:
                return uri.rstrip("/")
    raise MirrorError("no Debian archive in /etc/apt/sources.list(.d) for debootstrap")


def _run(*args: str | Path, timeout: float) -> str:
    command = [str(arg) for arg in args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MirrorError(f"{command[0]} took longer than {timeout:.0f} s: {' '.join(command)}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stderr.strip() or result.stdout.strip()).splitlines()[-20:])
        raise MirrorError(f"{' '.join(command)} exited {result.returncode}:\n{tail}")
    return result.stdout
