"""Board profiles: a Raspberry Pi 4 / Pi 5 / other board is recognised from a root laid out like `/` (its device
tree model and /proc/cpuinfo, either alone), its profile picks the thread counts and batch size, explicit settings
win, and a real daemon told `board_profile = "pi5"` says so in /readyz, /status and its log, and takes another
profile on SIGHUP."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

import pytest

from daemon.board import BOARD_PROFILE_CHOICES, Board, choose_profile, detect_board, profile_values
from daemon.board.profiles import make_profile
from daemon.board.report import board_report, log_profile
from daemon.doctor_checks import check_cpu
from daemon.settings import (
    FIELDS,
    Settings,
    SettingsError,
    default_batch_threads,
    default_generation_threads,
    load_settings,
    usable_cores,
)
from tests.conftest import start_daemon


def arm_cpuinfo(part: str, cores: int = 4, *, model: str = "", features: str = "fp asimd evtstrm crc32 cpuid",
                parts: list[str] | None = None) -> str:
    """/proc/cpuinfo as a 64-bit Raspberry Pi OS kernel writes it (the "Model" line only on Pi kernels)."""
    blocks = [f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {(parts or [part] * cores)[n]}\n"
              f"CPU revision\t: 3\n" for n in range(len(parts) if parts else cores)]
    tail = "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 100000001b5d5e1e\n"
    return "\n".join(blocks) + "\n" + tail + (f"Model\t\t: {model}\n" if model else "")


PI4_CPUINFO = arm_cpuinfo("0xd08", model="Raspberry Pi 4 Model B Rev 1.4")
PI5_CPUINFO = arm_cpuinfo("0xd0b", model="Raspberry Pi 5 Model B Rev 1.0",
                          features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimddp")
X86_CPUINFO = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 167\n"
               "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n\n")


def fake_root(tmp_path: Path, *, model: bytes | None = None, cpuinfo: str | bytes | None = None) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True, exist_ok=True)
    if model is not None:
        (root / "proc" / "device-tree").mkdir(exist_ok=True)
        (root / "proc" / "device-tree" / "model").write_bytes(model)
    if cpuinfo is not None:
        data = cpuinfo.encode() if isinstance(cpuinfo, str) else cpuinfo
        (root / "proc" / "cpuinfo").write_bytes(data)
    return root


# ---- detection ----

def test_a_pi_5_is_recognised_by_its_device_tree_and_by_its_cpuinfo_alone(tmp_path: Path) -> None:
    both = detect_board(fake_root(tmp_path, model=b"Raspberry Pi 5 Model B Rev 1.0\0", cpuinfo=PI5_CPUINFO))
    assert both == Board("pi5", "device-tree model 'Raspberry Pi 5 Model B Rev 1.0'", "Raspberry Pi 5 Model B Rev 1.0")
    tree_only = detect_board(fake_root(tmp_path / "tree", model=b"Raspberry Pi 5 Model B Rev 1.0\0"))
    assert tree_only.kind == "pi5"
    # A container: no device tree, and a cpuinfo without the Pi kernel's Model line.
    container = detect_board(fake_root(tmp_path / "ctr", cpuinfo=arm_cpuinfo("0xd0b")))
    assert container.kind == "pi5" and container.model == ""
    assert container.evidence == "cpuinfo: 4 Cortex-A76 cores (CPU part 0xd0b)"


def test_a_pi_4_is_recognised_by_its_cpuinfo_model_line_or_its_cpu_part(tmp_path: Path) -> None:
    by_model = detect_board(fake_root(tmp_path, cpuinfo=PI4_CPUINFO))
    assert by_model == Board("pi4", "cpuinfo model 'Raspberry Pi 4 Model B Rev 1.4'", "Raspberry Pi 4 Model B Rev 1.4")
    by_part = detect_board(fake_root(tmp_path / "b", cpuinfo=arm_cpuinfo("0xD08", cores=4)))  # upper-case hex too
    assert by_part.kind == "pi4" and "Cortex-A72" in by_part.evidence


@pytest.mark.parametrize(("model", "kind"), [
    ("Raspberry Pi 400 Rev 1.0", "pi4"),
    ("Raspberry Pi Compute Module 4 Rev 1.1", "pi4"),
    ("Raspberry Pi Compute Module 4S Rev 1.0", "pi4"),
    ("Raspberry Pi 500 Rev 1.0", "pi5"),
    ("Raspberry Pi Compute Module 5 Rev 1.0", "pi5"),
    ("Raspberry Pi 3 Model B Plus Rev 1.3", "other"),
    ("Raspberry Pi Zero 2 W Rev 1.0", "other"),
])
def test_pi_variants_belong_to_their_generation(tmp_path: Path, model: str, kind: str) -> None:
    board = detect_board(fake_root(tmp_path, model=model.encode() + b"\0"))
    assert (board.kind, board.model) == (kind, model)


def test_a_pi_3_is_generic_even_with_an_arm_cpuinfo(tmp_path: Path) -> None:
    board = detect_board(fake_root(tmp_path, model=b"Raspberry Pi 3 Model B Rev 1.2\0",
                                   cpuinfo=arm_cpuinfo("0xd03", model="Raspberry Pi 3 Model B Rev 1.2")))
    assert board.kind == "other" and "is not a Raspberry Pi 4 or 5" in board.evidence


def test_x86_and_an_empty_root_are_other(tmp_path: Path) -> None:
    x86 = detect_board(fake_root(tmp_path, cpuinfo=X86_CPUINFO))
    assert x86.kind == "other" and x86.model == ""  # x86's lower-case "model : 167" is no board name
    assert "not an ARM board" in x86.evidence
    empty = detect_board(tmp_path / "nothing-here")
    assert empty == Board("other", "no device-tree model and no readable /proc/cpuinfo")


def test_garbage_is_ignored_and_never_raises(tmp_path: Path) -> None:
    junk = detect_board(fake_root(tmp_path, model=b"\xff\xfe\x01\x02\0Raspberry Pi 5", cpuinfo=b"\xff\x00\x9c" * 500))
    assert junk.kind == "other" and junk.model == ""
    # A garbled device tree does not hide good cpuinfo; a garbled CPU part line does not hide the good ones.
    lines = arm_cpuinfo("0xd0b").replace("CPU part\t: 0xd0b", "CPU part\t: 0xzz", 1)
    board = detect_board(fake_root(tmp_path / "b", model=b"\x07\x08garbled\0", cpuinfo=lines))
    assert board.kind == "pi5" and "3 Cortex-A76 cores" in board.evidence
    # The model "file" is a directory: that source says nothing.
    root = fake_root(tmp_path / "c", cpuinfo=PI4_CPUINFO)
    (root / "proc" / "device-tree" / "model").mkdir(parents=True)
    assert detect_board(root).kind == "pi4"


def test_mixed_or_foreign_cores_are_no_pi_class(tmp_path: Path) -> None:
    big_little = arm_cpuinfo("", parts=["0xd05"] * 4 + ["0xd0b"] * 4)  # RK3588: 4 Cortex-A55 + 4 Cortex-A76
    board = detect_board(fake_root(tmp_path, model=b"Radxa ROCK 5B\0", cpuinfo=big_little))
    assert (board.kind, board.model) == ("other", "Radxa ROCK 5B")
    foreign = arm_cpuinfo("0xd0b").replace("0x41", "0x51")  # the same part number from another implementer
    assert detect_board(fake_root(tmp_path / "q", cpuinfo=foreign)).kind == "other"
    # A non-Pi board whose cores are all Cortex-A76 decodes like a Pi 5: its class, its own name kept.
    a76 = detect_board(fake_root(tmp_path / "a", model=b"Some A76 board\0", cpuinfo=arm_cpuinfo("0xd0b")))
    assert (a76.kind, a76.model) == ("pi5", "Some A76 board")


# ---- profiles ----

def test_profile_values_and_the_core_cap() -> None:
    assert make_profile("pi5", 4).values() == {"threads": 2, "threads_batch": 4, "n_batch": 256}
    assert make_profile("pi4", 4).values() == {"threads": 3, "threads_batch": 4, "n_batch": 256}
    assert make_profile("pi5", 2).values() == {"threads": 2, "threads_batch": 2, "n_batch": 256}
    assert make_profile("pi4", 1).values() == {"threads": 1, "threads_batch": 1, "n_batch": 256}
    for name in ("pi4", "pi5", "generic"):
        profile = make_profile(name, usable_cores())  # type: ignore[arg-type]
        assert profile.threads <= usable_cores() and profile.threads_batch <= usable_cores()


def test_the_generic_profile_is_todays_defaults() -> None:
    generic = make_profile("generic", usable_cores())
    assert (generic.threads, generic.threads_batch) == (default_generation_threads(), default_batch_threads())
    plain = Settings()
    assert generic.values() == {"threads": plain.threads, "threads_batch": plain.threads_batch,
                                "n_batch": plain.n_batch}
    # This machine is no Pi: loading the settings with no source at all gives exactly the old defaults.
    loaded = load_settings({}, environ={})
    assert (loaded.board_profile, loaded.threads, loaded.threads_batch, loaded.n_batch) == (
        "auto", plain.threads, plain.threads_batch, plain.n_batch)


def test_auto_follows_the_board_and_a_forced_profile_wins() -> None:
    pi5 = Board("pi5", "device-tree model 'Raspberry Pi 5 Model B Rev 1.0'")
    assert choose_profile("auto", pi5, cores=4).profile.values() == {"threads": 2, "threads_batch": 4,
                                                                       "n_batch": 256}
    assert choose_profile("auto", Board("other", "x86"), cores=4).profile.name == "generic"
    forced = choose_profile("pi4", pi5, cores=4)
    assert forced.profile.name == "pi4"
    assert forced.reason.startswith("set by board_profile = pi4 (detected: pi5; device-tree model")
    with pytest.raises(ValueError, match="pi6"):
        choose_profile("pi6", pi5)
    assert FIELDS["board_profile"].metadata["choices"] == BOARD_PROFILE_CHOICES  # the setting offers each one


def test_explicit_settings_are_left_alone() -> None:
    pi4 = Board("pi4", "cpuinfo")
    assert profile_values({"threads": 1}, board=pi4) == {"threads_batch": min(4, usable_cores()), "n_batch": 256}
    assert profile_values({"board_profile": "generic", "n_batch": 64}, board=pi4) == {
        "threads": default_generation_threads(), "threads_batch": default_batch_threads()}


def test_every_source_overrides_the_profile_and_the_report_says_which(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('board_profile = "pi5"\nn_batch = 128\n')
    settings = load_settings({"threads": "1"}, config=config, environ={})
    cores = usable_cores()
    assert (settings.threads, settings.threads_batch, settings.n_batch) == (1, min(4, cores), 128)
    report = board_report(settings)
    assert report["profile"] == "pi5" and report["setting"] == "pi5" and report["detected"] == "other"
    assert report["profile_values"] == {"threads": min(2, cores), "threads_batch": min(4, cores), "n_batch": 256}
    assert (report["threads"], report["threads_batch"], report["n_batch"]) == (1, min(4, cores), 128)
    assert report["overridden"] == ["threads", "n_batch"]
    from_env = load_settings({}, environ={"KIOSKD_BOARD_PROFILE": "pi4", "KIOSKD_THREADS_BATCH": "1"})
    assert board_report(from_env)["overridden"] == ["threads_batch"]
    assert from_env.threads == min(3, cores)


def test_a_bad_board_profile_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"'board_profile' \(from env KIOSKD_BOARD_PROFILE\).*'pi6'"):
        load_settings({}, environ={"KIOSKD_BOARD_PROFILE": "pi6"})


def test_the_log_line_and_doctor_name_the_profile(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"board_profile": "pi5", "threads_batch": "1"}, environ={})
    with caplog.at_level(logging.INFO, logger="daemon.board.report"):
        log_profile(settings)
    line = caplog.records[-1].getMessage()
    assert line.startswith("board profile pi5 (set by board_profile = pi5 (detected: other;")
    assert "threads_batch 1" in line and line.endswith("set by the settings instead: threads_batch")
    assert "board profile pi5 (set by board_profile = pi5" in check_cpu(settings).message


# ---- a real daemon ----

def test_a_daemon_forced_to_pi5_reports_its_profile(test_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('board_profile = "pi5"\n')
    d = start_daemon(tmp_path, "--config", str(config), "--model", str(test_model), "--n-batch", "64")
    try:
        code, body = d.get("/readyz")
        assert code == 200, body
        board = json.loads(body)["board"]
        cores = usable_cores()
        assert board["profile"] == "pi5" and board["setting"] == "pi5" and board["detected"] == "other"
        assert board["profile_values"] == {"threads": min(2, cores), "threads_batch": min(4, cores), "n_batch": 256}
        # The cores here cap the Pi 5's 4 prompt-reading threads; n_batch came from the flag.
        assert (board["threads"], board["threads_batch"], board["n_batch"]) == (min(2, cores), min(4, cores), 64)
        assert board["overridden"] == ["n_batch"]
        code, body = d.get("/status")
        assert code == 200 and json.loads(body)["board"] == board
        assert "board profile pi5 (set by board_profile = pi5" in d.log()
        assert f"threads {min(2, cores)}, threads_batch {min(4, cores)}, n_batch 64" in d.log()
        # SIGHUP with another profile: applied while serving (the model is loaded again with its values).
        config.write_text('board_profile = "pi4"\n')
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while "board profile pi4" not in d.log() or "reload: applied board_profile" not in d.log():
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.1)
        code, body = d.get("/readyz")
        board = json.loads(body)["board"]
        assert code == 200 and (board["profile"], board["setting"], board["overridden"]) == ("pi4", "pi4", ["n_batch"])
        assert board["threads"] == min(3, cores) and board["n_batch"] == 64
    finally:
        assert d.stop() == 0
