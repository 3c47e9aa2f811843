"""The x86_64 llama-cpp-python wheel a fleet gets: built for a named ISA, never for the build machine's own CPU.

llama.cpp builds with -march=native by default. A wheel built that way on the operator's machine carries that
machine's instructions to every kiosk: AVX-512 or AMX code dies with SIGILL on a kiosk's smaller CPU (and AMX
even faults on some virtual machines that advertise it). So the mirror's x86_64 wheel is built for x86-64-v3
(AVX2, FMA, F16C, BMI2: every x86 CPU since 2015 that can run a chat model usefully), with the same flags as
scripts/setup.sh, and kept in the same place, `<source tree>/.cache/wheels/llama-<key>/`, keyed by the pin and
the flags: a developer's set-up and the mirror share one build. pip's own wheel cache is never used for it, since
it keys a wheel by its sdist alone, whatever flags built it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from daemon.mirror.errors import MirrorError
from daemon.mirror.pip import run_pip

_LOGGER = logging.getLogger(__name__)

# Keep in step with llama_cmake_args() in scripts/setup.sh (tests/test_mirror_llama_build.py holds them equal).
X86_64_CMAKE_ARGS = ("-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF "
                     "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON")


def wheel_cache_dir() -> Path:
    """`<source tree>/.cache/wheels` (where scripts/setup.sh builds), else ~/.cache/kioskd/wheels."""
    if os.environ.get("KIOSKD_WHEEL_CACHE"):
        return Path(os.environ["KIOSKD_WHEEL_CACHE"])
    source_tree = Path(__file__).resolve().parents[2]
    if (source_tree / "pyproject.toml").is_file():
        return source_tree / ".cache" / "wheels"
    return Path.home() / ".cache" / "kioskd" / "wheels"


def build_key(version: str, cmake_args: str = X86_64_CMAKE_ARGS) -> str:
    """The folder key scripts/setup.sh computes: sha256 of "llama-cpp-python==<version> <flags>", 12 digits."""
    return hashlib.sha256(f"llama-cpp-python=={version} {cmake_args}".encode()).hexdigest()[:12]


def x86_64_wheel(version: str) -> Path:
    """The x86-64-v3 wheel of llama-cpp-python `version`: the cached build, else built now (minutes)."""
    folder = wheel_cache_dir() / f"llama-{build_key(version)}"
    found = sorted(folder.glob(f"llama_cpp_python-{version}-*.whl"))
    if found:
        _LOGGER.info("llama-cpp-python %s: the x86-64-v3 build in %s", version, folder)
        return found[-1]
    building = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    _LOGGER.info("building llama-cpp-python %s for x86-64-v3 (several minutes)", version)
    env = {**os.environ, "CMAKE_ARGS": X86_64_CMAKE_ARGS,
           "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))}
    run_pip("wheel", "-q", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python", "-w", building,
            f"llama-cpp-python=={version}", what=f"building llama-cpp-python {version}", timeout=3600, env=env)
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)
    found = sorted(folder.glob(f"llama_cpp_python-{version}-*.whl"))
    if not found:
        raise MirrorError(f"pip built no llama-cpp-python {version} wheel into {folder}")
    return found[-1]
