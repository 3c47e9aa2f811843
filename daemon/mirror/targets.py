"""What a wheelhouse is built for: a CPU architecture and a CPython version, and which wheels fit one."""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import dataclass

from daemon.mirror.errors import MirrorError

ARCHES = ("x86_64", "aarch64")
# Debian 12 (bookworm) and Raspberry Pi OS on it ship glibc 2.36: pip takes every manylinux wheel up to that.
GLIBC = "2_36"  # major_minor
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?"
                    r"-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$")


@dataclass(frozen=True)
class Target:
    """One kind of kiosk: `arch` as `uname -m` (and Ansible's architecture fact) names it, `python` as "3.11"."""

    arch: str
    python: str

    @property
    def cp(self) -> str:
        """The interpreter tag: cp311."""
        return "cp" + self.python.replace(".", "")

    @property
    def name(self) -> str:
        """x86_64-cp311: the name of its lock file."""
        return f"{self.arch}-{self.cp}"

    @property
    def platforms(self) -> tuple[str, ...]:
        """pip --platform values, most preferred first: every manylinux up to the target's glibc (pip expands
        only the legacy manylinux2014 name by itself), then plain linux_<arch> (wheels built for the target)."""
        newest = int(GLIBC.split("_")[1])
        manylinux = [f"manylinux_2_{minor}_{self.arch}" for minor in range(newest, 4, -1)]
        return (*manylinux, f"manylinux2014_{self.arch}", f"linux_{self.arch}")

    def pip_args(self) -> list[str]:
        """The arguments that make `pip download` resolve for this target rather than for this machine."""
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python, "--abi", self.cp]
        for tag in self.platforms:
            args += ["--platform", tag]
        return args

    def is_this_machine(self) -> bool:
        """True when wheels built here (pip wheel, pip's wheel cache) run on the target."""
        return self == host_target()


def host_target() -> Target:
    return Target(platform.machine(), f"{sys.version_info.major}.{sys.version_info.minor}")


def parse_target(arch: str, python: str) -> Target:
    """A Target from the command line; MirrorError for an architecture or version the fleet does not run."""
    if arch not in ARCHES:
        raise MirrorError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHES)}")
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise MirrorError(f"--python {python!r} is not a CPython version like 3.11")
    return Target(arch, python)


@dataclass(frozen=True)
class WheelName:
    """The parts of a wheel's file name (PEP 427) that decide where it installs."""

    name: str
    version: str
    python: str
    abi: str
    platform: str

    @property
    def project(self) -> str:
        """The normalised project name as a lock line writes it: llama-cpp-python."""
        return re.sub(r"[-_.]+", "-", self.name).lower()

    @property
    def pure(self) -> bool:
        return self.platform == "any"

    def fits(self, target: Target) -> bool:
        """Whether pip would install this wheel on `target` (by tags; manylinux up to the target's glibc)."""
        pythons = set(self.python.split("."))
        stable_abi = self.abi == "abi3" and any(_cp_version(tag) <= _cp_version(target.cp) for tag in pythons)
        if not (pythons & {target.cp, "py3", f"py{target.cp[2:]}"} or stable_abi):
            return False
        if self.pure:
            return True
        return any(tag.endswith(f"_{target.arch}") and _glibc_ok(tag) for tag in self.platform.split("."))


def parse_wheel_name(file_name: str) -> WheelName:
    match = _WHEEL.match(file_name)
    if not match:
        raise MirrorError(f"{file_name} is not a wheel file name (name-version-python-abi-platform.whl)")
    return WheelName(match["name"], match["version"], match["python"], match["abi"], match["platform"])


def _cp_version(tag: str) -> tuple[int, int]:
    """cp39 -> (3, 9); any other tag sorts after every CPython."""
    found = re.fullmatch(r"cp(\d)(\d+)", tag)
    return (int(found[1]), int(found[2])) if found else (99, 0)


def _glibc_ok(tag: str) -> bool:
    found = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    if not found:
        return True  # linux_<arch>, manylinux1/2010/2014: all older than the target's glibc
    major, minor = (int(part) for part in GLIBC.split("_"))
    return (int(found[1]), int(found[2])) <= (major, minor)
