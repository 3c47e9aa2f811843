"""The x86_64 llama-cpp-python build that developers, CI and the fleet's mirror share (daemon/mirror/llama_build.py,
scripts/setup.sh): the same flags and cache key in both, and a wheel whose CPU library holds no instruction beyond
x86-64-v3 (a -march=native build on an AMX machine faulted on every model call)."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from daemon.mirror import llama_build, source_wheels
from daemon.mirror.cross_build import kioskd_pins
from daemon.mirror.targets import parse_target

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup.sh"
# Registers and instructions of AVX-512 and AMX: none may appear in an x86-64-v3 build.
BEYOND_V3 = re.compile(r"\b(zmm\d+|k[0-7]\}|ldtilecfg|tileloadd|tdpbusd|tdpbf16ps|vpdpbusd)\b")


def _setup_flags() -> str:
    found = re.search(r'local args="([^"]+)"\n.*?\n\s+args="\$args ([^"]+)"', SETUP.read_text(), re.S)
    assert found, "scripts/setup.sh changed: llama_cmake_args() no longer has its two args lines"
    return f"{found[1]} {found[2]}"


def test_setup_and_the_mirror_build_llama_with_the_same_flags_and_key() -> None:
    flags = _setup_flags()
    assert flags == llama_build.X86_64_CMAKE_ARGS
    assert "-DGGML_NATIVE=OFF" in flags
    version = kioskd_pins()["llama-cpp-python"]
    # The key as setup.sh computes it, by the shell itself.
    shell = subprocess.run(["bash", "-c", 'printf "%s %s" "$1" "$2" | sha256sum | cut -c1-12', "_",
                            f"llama-cpp-python=={version}", flags], capture_output=True, text=True, check=True)
    assert shell.stdout.strip() == llama_build.build_key(version)


def test_the_mirror_takes_the_shared_build_and_never_pips_cache(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    version = kioskd_pins()["llama-cpp-python"]
    cache = tmp_path / "cache"
    folder = cache / f"llama-{llama_build.build_key(version)}"
    folder.mkdir(parents=True)
    shared = folder / f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl"
    shared.write_bytes(b"the shared build")
    monkeypatch.setenv("KIOSKD_WHEEL_CACHE", str(cache))
    monkeypatch.setattr(source_wheels, "_from_pip_cache",
                        lambda *args: pytest.fail("pip's wheel cache consulted for llama-cpp-python"))
    package = next(p for p in source_wheels.SOURCE_ONLY if p.project == "llama-cpp-python")
    assert source_wheels._built_here(package, version, parse_target("x86_64", "3.11"), tmp_path) == shared


def test_the_shared_x86_64_wheel_holds_no_avx512_or_amx_code(tmp_path: Path) -> None:
    version = kioskd_pins()["llama-cpp-python"]
    folder = llama_build.wheel_cache_dir() / f"llama-{llama_build.build_key(version)}"
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if not wheels or not shutil.which("objdump"):
        pytest.skip(f"no shared build in {folder} (scripts/setup.sh makes it on x86_64) or no objdump")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith("libggml-cpu.so"))
        library = tmp_path / "libggml-cpu.so"
        library.write_bytes(wheel.read(name))
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                             text=True, check=True).stdout
    assert "vfmadd" in listing  # the check reads real AVX2/FMA code
    beyond = sorted({m[0] for m in BEYOND_V3.finditer(listing)})
    assert not beyond, f"instructions beyond x86-64-v3 in {name}: {beyond[:10]}"
