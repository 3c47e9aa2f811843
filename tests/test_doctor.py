"""`kioskd doctor`: the checks on real files, sockets and SQLite databases, and the real CLI end to end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import doctor
from daemon.doctor_checks import (
    MB,
    Check,
    Status,
    check_history,
    check_model,
    check_port,
    check_state_dir,
    cpu_verdict,
    disk_verdict,
    memory_verdict,
)
from daemon.history import HistoryStore
from daemon.models.catalogue import CATALOGUE
from daemon.settings import Settings
from tests.conftest import ROOT, TEST_MODEL, free_port, start_daemon

CORE_NAMES = ["settings", "model", "cpu", "memory", "disk", "state dir", "history", "knowledge", "port"]


def run_doctor(*args: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
    proc = subprocess.run([sys.executable, "-m", "daemon", "doctor", *args], capture_output=True, text=True,
                          cwd=ROOT, env=environ, timeout=60)
    return proc.returncode, proc.stdout


def run_json(*args: str) -> tuple[int, dict[str, dict[str, str]]]:
    code, out = run_doctor("--json", *args)
    checks = json.loads(out)
    assert isinstance(checks, list)
    return code, {check["name"]: check for check in checks}


def base_args(tmp_path: Path, model: Path) -> list[str]:
    return ["--model", str(model), "--state-dir", str(tmp_path / "state"), "--port", str(free_port())]


def settings(tmp_path: Path, **changes: object) -> Settings:
    values: dict[str, object] = {"state_dir": tmp_path / "state", "voice": False, "port": free_port()}
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def flipped_copy(model: Path, dest: Path) -> Path:
    shutil.copyfile(model, dest)
    with dest.open("r+b") as fh:
        fh.seek(dest.stat().st_size // 2)
        chunk = fh.read(16)
        fh.seek(-len(chunk), os.SEEK_CUR)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    return dest


# ---- end to end: the real CLI ----

def test_healthy_kiosk_passes(tmp_path: Path, test_model: Path) -> None:
    code, out = run_doctor(*base_args(tmp_path, test_model))
    assert code == 0, out
    lines = {line.split()[1]: line for line in out.splitlines()[:-1]}
    for name in ("settings", "model", "cpu", "memory", "disk", "history", "port"):
        assert lines[name].startswith("OK"), out
    assert "matches its pull record" in lines["model"]
    assert "hashed in" in lines["model"]
    # Voice is on by default: without a sound card its checks WARN, which must not fail the doctor.
    assert "FAIL" not in out.replace("0 FAIL", "")
    assert out.splitlines()[-1].startswith("kioskd doctor: ")


def test_json_lists_every_check(tmp_path: Path, test_model: Path) -> None:
    code, checks = run_json(*base_args(tmp_path, test_model), "--voice", "false")
    assert code == 0
    assert list(checks) == [*CORE_NAMES, "voice"]
    assert {check["status"] for check in checks.values()} == {"OK"}
    assert all(check["message"] for check in checks.values())


def test_missing_model_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    code, out = run_doctor(*base_args(tmp_path, missing), "--voice", "false")
    assert code == 1
    model_line = next(line for line in out.splitlines() if line.split()[1] == "model")
    assert model_line.startswith("FAIL") and str(missing) in model_line


def test_an_upstream_kiosk_without_fallback_needs_no_model(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    upstream = ["--engine", "upstream", "--upstream-url", "http://127.0.0.1:9/v1"]
    code, out = run_doctor(*base_args(tmp_path, missing), "--voice", "false", *upstream, "--upstream-fallback", "false")
    model_line = next(line for line in out.splitlines() if line.split()[1] == "model")
    assert model_line.startswith("OK") and "upstream http://127.0.0.1:9/v1" in model_line, out
    code, out = run_doctor(*base_args(tmp_path, missing), "--voice", "false", *upstream)  # the fallback is on
    model_line = next(line for line in out.splitlines() if line.split()[1] == "model")
    assert code == 1 and model_line.startswith("FAIL") and str(missing) in model_line


def test_invalid_setting_is_a_failed_check(tmp_path: Path) -> None:
    code, checks = run_json("--port", "0", "--state-dir", str(tmp_path))
    assert code == 1
    assert list(checks) == ["settings"]
    assert checks["settings"]["status"] == "FAIL" and "'port'" in checks["settings"]["message"]


def test_running_kioskd_holding_the_port_is_ok(tmp_path: Path, test_model: Path) -> None:
    daemon = start_daemon(tmp_path, "--model", str(test_model))
    try:
        code, checks = run_json("--model", str(test_model), "--state-dir", str(tmp_path / "state"),
                                "--port", str(daemon.port), "--voice", "false")
    finally:
        daemon.stop()
    assert code == 0, checks
    assert checks["port"]["status"] == "OK"
    assert f"kioskd already serving on 127.0.0.1:{daemon.port}" in checks["port"]["message"]
    assert "ready" in checks["port"]["message"]
    assert checks["history"]["status"] == "OK"  # Opened read-only beside the running daemon.


# ---- model ----

def test_corrupt_model_is_a_checksum_mismatch(tmp_path: Path, test_model: Path) -> None:
    # Named like the catalogue file, with the pull record copied beside it: the record's checksum is expected.
    corrupt = flipped_copy(test_model, tmp_path / test_model.name)
    shutil.copyfile(test_model.with_name(test_model.name + ".json"), corrupt.with_name(corrupt.name + ".json"))
    check = check_model(settings(tmp_path, model=corrupt))
    assert check.status is Status.FAIL
    assert "checksum mismatch" in check.message and "pull record" in check.message
    # Renamed and without a record, its size still identifies the catalogue model it claims to be.
    renamed = corrupt.rename(tmp_path / "renamed.gguf")
    check = check_model(settings(tmp_path, model=renamed))
    assert check.status is Status.FAIL
    assert "checksum mismatch" in check.message and f"catalogue model {TEST_MODEL}" in check.message
    assert CATALOGUE[TEST_MODEL].sources[0].sha256 in check.message


def test_not_a_gguf_fails(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>404 not found</html>")
    check = check_model(settings(tmp_path, model=bogus))
    assert check.status is Status.FAIL and "not a GGUF" in check.message


def test_unknown_gguf_warns_with_its_checksum(tmp_path: Path) -> None:
    model = tmp_path / "custom.gguf"
    model.write_bytes(b"GGUF" + bytes(1000))
    check = check_model(settings(tmp_path, model=model))
    assert check.status is Status.WARN and "checksum unknown" in check.message
    assert hashlib.sha256(model.read_bytes()).hexdigest() in check.message


def test_unpulled_or_unknown_catalogue_model_fails(tmp_path: Path) -> None:
    check = check_model(settings(tmp_path, models_dir=tmp_path / "models", model_name=TEST_MODEL))
    assert check.status is Status.FAIL and "kioskd pull" in check.message
    check = check_model(settings(tmp_path, model_name="no-such-model"))
    assert check.status is Status.FAIL and "unknown model" in check.message


# ---- state ----

def test_state_dir_under_a_file_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    s = settings(tmp_path, state_dir=blocker / "sub")
    check = check_state_dir(s)
    assert check.status is Status.FAIL and str(blocker) in check.message
    assert check_history(s).status is Status.FAIL


def test_state_dir_missing_but_creatable_is_ok(tmp_path: Path) -> None:
    s = settings(tmp_path, state_dir=tmp_path / "a" / "b")
    assert check_state_dir(s).status is Status.OK
    assert check_history(s).status is Status.OK
    assert not (tmp_path / "a").exists()  # The doctor only looks.


def test_history_database_checks(tmp_path: Path) -> None:
    s = settings(tmp_path)
    HistoryStore(s.history_file).close()
    assert check_history(s).status is Status.OK
    with sqlite3.connect(s.history_file) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    check = check_history(s)
    assert check.status is Status.FAIL and "newer than this kioskd" in check.message
    s.history_file.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        s.history_file.with_name(s.history_file.name + suffix).unlink(missing_ok=True)
    assert check_history(s).status is Status.FAIL


# ---- network ----

def test_port_held_by_another_process_fails() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        check = check_port(Settings(host="127.0.0.1", port=port))
    assert check.status is Status.FAIL
    assert f"port {port}" in check.message and "in use by another process" in check.message


def test_bad_host_fails() -> None:
    assert check_port(Settings(host="no such host.invalid", port=free_port())).status is Status.FAIL
    # TEST-NET-3: a valid address, but not one of this machine's.
    check = check_port(Settings(host="203.0.113.7", port=free_port()))
    assert check.status is Status.FAIL and "not an address of this machine" in check.message


# ---- hardware verdicts ----

def test_cpu_verdicts() -> None:
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
    assert cpu_verdict(x86, "x86_64", 4, 2, 4).status is Status.OK
    slow = cpu_verdict(x86.replace(" avx2", ""), "x86_64", 4, 2, 4)
    assert slow.status is Status.WARN and "avx2" in slow.message
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"
    check = cpu_verdict(arm, "aarch64", 4, 2, 4)
    assert check.status is Status.WARN and "dotprod" in check.message and "asimd," not in check.message
    assert cpu_verdict(arm.replace("crc32", "asimddp"), "aarch64", 4, 2, 4).status is Status.OK
    crowded = cpu_verdict(x86, "x86_64", 2, 4, 2)
    assert crowded.status is Status.WARN and "threads = 4 exceeds the 2 usable cores" in crowded.message


def test_memory_and_disk_verdicts() -> None:
    assert memory_verdict(4000 * MB, 490 * MB).status is Status.OK
    assert memory_verdict(1000 * MB, 490 * MB).status is Status.WARN
    assert memory_verdict(600 * MB, 490 * MB).status is Status.FAIL
    assert memory_verdict(600 * MB, 0).status is Status.OK  # No model file: the model check fails instead.
    assert disk_verdict(10_000 * MB, Path("/")).status is Status.OK
    assert disk_verdict(200 * MB, Path("/")).status is Status.WARN
    assert disk_verdict(10 * MB, Path("/")).status is Status.FAIL


# ---- voice ----

def voice(tmp_path: Path, **changes: object) -> dict[str, Check]:
    s = settings(tmp_path, voice=True, audio_input="none", audio_output="none", **changes)
    return {check.name: check for check in doctor.voice_checks(s)}


def test_missing_speech_model_warns_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "vosk-model"
    check = voice(tmp_path, speech_model=missing)["speech model"]
    assert check.status is Status.WARN and str(missing) in check.message
    (missing / "conf").mkdir(parents=True)
    check = voice(tmp_path, speech_model=missing)["speech model"]
    assert check.status is Status.WARN and "am/, graph/" in check.message


def test_piper_voice_needs_its_json(tmp_path: Path) -> None:
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"onnx")
    check = voice(tmp_path, tts_voice=onnx, tts_voice_zh=onnx)["tts voice zh"]
    assert check.status is Status.WARN and "voice.onnx.json" in check.message
    onnx.with_name("voice.onnx.json").write_text("{}")
    assert voice(tmp_path, tts_voice=onnx)["tts voice"].status is Status.OK


def test_no_portaudio_devices_warns() -> None:
    devices = doctor.port_audio_devices()
    if isinstance(devices, list) and devices:
        pytest.skip("this machine has audio devices")
    for kind in ("input", "output"):
        check = doctor.check_audio(kind, "default", lambda: devices)
        assert check.status is Status.WARN, check


def test_audio_file_specs(tmp_path: Path) -> None:
    def status(kind: str, spec: str) -> Status:
        return doctor.check_audio(kind, spec, lambda: "unused").status

    assert status("input", "none") is Status.OK
    assert status("input", f"wav:{tmp_path}/missing.wav") is Status.WARN
    assert status("output", f"wav:{tmp_path}/out.wav") is Status.OK
    assert status("output", f"wav:{tmp_path}/no-dir/out.wav") is Status.WARN
    assert status("input", f"pipe:{tmp_path}/mic") is Status.OK
    assert status("output", "pipe:-") is Status.OK
    assert status("input", "bogus:thing") is Status.WARN
    assert not (tmp_path / "out.wav").exists() and not (tmp_path / "mic").exists()


def test_device_matching_follows_sounddevice() -> None:
    devices: list[dict[str, object]] = [
        {"index": 0, "name": "HDA Intel PCH: ALC892 Analog (hw:0,0)", "hostapi": "ALSA", "max_input_channels": 2,
         "max_output_channels": 2, "default_input": False, "default_output": False},
        {"index": 1, "name": "USB Audio Device (hw:1,0)", "hostapi": "ALSA", "max_input_channels": 1,
         "max_output_channels": 0, "default_input": True, "default_output": False},
    ]
    assert doctor.check_device("audio input", "input", None, devices).message.endswith("USB Audio Device (hw:1,0) "
                                                                                       "(ALSA)")
    assert doctor.check_device("audio output", "output", None, devices).status is Status.WARN
    assert doctor.check_device("audio input", "input", "usb audio", devices).status is Status.OK
    assert doctor.check_device("audio input", "input", "1", devices).status is Status.OK
    assert doctor.check_device("audio output", "output", "USB", devices).status is Status.WARN
    ambiguous = doctor.check_device("audio input", "input", "hw", devices)
    assert ambiguous.status is Status.WARN and "several" in ambiguous.message


def test_a_crashing_check_is_a_failure(tmp_path: Path) -> None:
    def check_broken(s: Settings) -> Check:
        raise RuntimeError("boom")

    [check] = doctor.guarded(check_broken, settings(tmp_path))
    assert check == Check("broken", Status.FAIL, "the check itself failed: RuntimeError('boom')")
