"""The systemd units and the browser launcher under systemd/, checked with systemd's own tools.

`systemd-analyze verify` runs against a scratch root that holds the units at their installed paths, stub
executables where the install layout puts the daemon (so a typo'd ExecStart= path is caught) and a copy of the
host's system units (so sysinit.target and friends resolve). verify only *warns* about unknown keys and bad
values and still exits 0, so any diagnostic counts as a failure. `systemd-analyze security --offline=true`
scores the daemon's sandbox. The launcher runs for real against a local /readyz server, with fake `chromium`
and `xset` programs that record how they were called.

Debian packages: `systemd` (systemd-analyze, systemd-sysusers). Optional: `shellcheck`.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
LAUNCHER = UNITS / "kiosk-browser"
# Where the units expect things on a device (systemd/README.md); the playbook follows this layout.
INSTALLED_STUBS = ("/opt/kioskd/venv/bin/kioskd", "/bin/kill")
INSTALLED_LAUNCHER = "/usr/local/lib/kioskd/kiosk-browser"
OK_BAND_MAX = 4.9  # systemd's bands: >= 5.0 MEDIUM, 1.0-4.9 OK, 0.1-0.9 SAFE, 0.0 PERFECT
READY_DEADLINE_S = 30  # bound on any launcher run in these tests


def systemd_tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/bin/{name}") if os.access(p, os.X_OK)), None)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's `systemd` package (apt-get install -y systemd)")
    return path


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)


# --- unit files -------------------------------------------------------------------------------------------

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Sections to (key, value) pairs in file order; duplicate keys are kept, as systemd accumulates them."""
    unit: Unit = {}
    section: list[tuple[str, str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):  # continuation: systemd joins the lines with a space
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
        elif section is not None and "=" in line:
            key, value = line.split("=", 1)
            section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    """Every value of a list setting in effect: an empty assignment resets the list, as in systemd."""
    found: list[str] = []
    for k, v in unit.get(section, []):
        if k == key:
            found = [] if v == "" else [*found, v]
    return found


def value(unit: Unit, section: str, key: str) -> str | None:
    """A single-valued setting: the last assignment wins."""
    found = [v for k, v in unit.get(section, []) if k == key]
    return found[-1] if found else None


def words(unit: Unit, section: str, key: str) -> list[str]:
    return [word for v in values(unit, section, key) for word in v.split()]


def timespan_us(text: str) -> int:
    """A systemd time span ("30", "10min", "1min 30s") in microseconds, parsed by systemd itself."""
    result = run(systemd_tool("systemd-analyze"), "timespan", text)
    match = re.search(r"μs:\s*(\d+)", result.stdout)
    assert result.returncode == 0 and match, f"not a systemd time span: {text!r}: {result.stderr.strip()}"
    return int(match.group(1))


@pytest.fixture(scope="module")
def kioskd() -> Unit:
    return parse_unit((UNITS / "kioskd.service").read_text())


@pytest.fixture(scope="module")
def browser() -> Unit:
    return parse_unit((UNITS / "kiosk-browser.service").read_text())


# --- systemd-analyze verify --------------------------------------------------------------------------------

def host_system_units() -> Path:
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (candidate / "sysinit.target").exists():
            return candidate
    pytest.fail("no systemd system units (sysinit.target) on this host: install Debian's `systemd` package")


def install_root(root: Path) -> Path:
    """A scratch root with the units, the launcher and stub executables at their installed paths."""
    shutil.copytree(host_system_units(), root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    for stub in INSTALLED_STUBS:
        write_executable(root / stub.lstrip("/"), "#!/bin/sh\nexit 0\n")
    launcher = root / INSTALLED_LAUNCHER.lstrip("/")
    launcher.parent.mkdir(parents=True)
    shutil.copy(LAUNCHER, launcher)
    return root


def verify_problems(root: Path, name: str, text: str | None = None) -> list[str]:
    """What `systemd-analyze verify` says about unit `name` (optionally replaced by `text`); [] when clean."""
    if text is not None:
        (root / "etc/systemd/system" / name).write_text(text)
    result = run(systemd_tool("systemd-analyze"), "verify", f"--root={root}", name)
    problems = (result.stdout + result.stderr).splitlines()
    if result.returncode != 0 and not problems:
        problems = [f"exit status {result.returncode}"]
    return problems


@pytest.mark.parametrize("name", ["kioskd.service", "kiosk-browser.service"])
def test_unit_verifies_cleanly(tmp_path: Path, name: str) -> None:
    problems = verify_problems(install_root(tmp_path), name)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("old", "new"), [
    ("Type=notify", "Typ=notify"),  # typo'd key: verify warns but exits 0
    ("Type=notify", "Type=notifyy"),  # invalid value
    ("WatchdogSec=30", "WatchdogSec=thirty"),
    ("ProtectSystem=strict", "ProtectSystem=stric"),
    ("SystemCallFilter=@system-service", "SystemCallFilter=@system-servic"),
    ("[Service]", "[Servce]"),
    ("ExecStart=/opt/kioskd/venv/bin/kioskd serve", "ExecStart=/opt/kioskd/venv/bin/kiosk serve"),  # no such file
])
def test_verify_catches_a_broken_unit(tmp_path: Path, old: str, new: str) -> None:
    text = (UNITS / "kioskd.service").read_text()
    assert old in text, f"the negative case no longer matches the unit: {old!r}"
    problems = verify_problems(install_root(tmp_path), "kioskd.service", text.replace(old, new, 1))
    assert problems, f"systemd-analyze verify accepted {new!r}"


# --- systemd-analyze security -----------------------------------------------------------------------------

def test_daemon_sandbox_rates_ok_or_better() -> None:
    unit = UNITS / "kioskd.service"
    result = run(systemd_tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit))
    match = re.search(r"Overall exposure level for kioskd\.service:\s*([\d.]+)\s+(\w+)", result.stdout)
    assert match, f"no overall exposure in the output:\n{result.stdout}\n{result.stderr}"
    exposure, band = float(match.group(1)), match.group(2)
    print(f"kioskd.service exposure: {exposure} {band}")
    failing = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert exposure <= OK_BAND_MAX and band in {"OK", "SAFE", "PERFECT"}, "\n".join(failing)
    # The tool's own gate agrees (its threshold is in tenths).
    gate = run(systemd_tool("systemd-analyze"), "security", "--offline=true", "--threshold=49", str(unit))
    assert gate.returncode == 0, gate.stdout[-2000:]


# --- unit semantics -----------------------------------------------------------------------------------------

def seconds(unit: Unit, key: str, section: str = "Service") -> float:
    setting = value(unit, section, key)
    assert setting, f"{key}= must be set in [{section}]"
    return timespan_us(setting) / 1e6


def test_unit_parser_keeps_duplicates_and_resets() -> None:
    unit = parse_unit("[Service]\n# c\nA=1\nA=2\\\n  3\nB=x\nB=\nB=y\n[Install]\nA=z\n")
    assert values(unit, "Service", "A") == ["1", "2 3"] and value(unit, "Service", "A") == "2 3"
    assert values(unit, "Service", "B") == ["y"] and words(unit, "Install", "A") == ["z"]


def test_daemon_unit_contract(kioskd: Unit) -> None:
    service = "Service"
    assert value(kioskd, service, "Type") == "notify"
    assert value(kioskd, service, "NotifyAccess") == "main"
    assert seconds(kioskd, "WatchdogSec") > 0
    assert value(kioskd, service, "Restart") == "on-failure"
    assert value(kioskd, service, "ExecStart") == "/opt/kioskd/venv/bin/kioskd serve"
    assert "-HUP" in (value(kioskd, service, "ExecReload") or "")
    assert value(kioskd, service, "User") == "kioskd" and value(kioskd, service, "Group") == "kioskd"
    assert value(kioskd, service, "DynamicUser") in (None, "no")
    assert "audio" in words(kioskd, service, "SupplementaryGroups")
    assert "kioskd" in words(kioskd, service, "StateDirectory")
    assert "kioskd" in words(kioskd, service, "ConfigurationDirectory")
    assert 0 < seconds(kioskd, "TimeoutStopSec") <= 90
    assert seconds(kioskd, "TimeoutStartSec") >= 120  # a model load on a Raspberry Pi
    assert seconds(kioskd, "StartLimitIntervalSec", "Unit") > 0 and value(kioskd, "Unit", "StartLimitBurst")


def test_daemon_sandbox_leaves_audio_and_llama_working(kioskd: Unit) -> None:
    service = "Service"
    # sounddevice's PortAudio callback is a cffi ABI-mode callback, which needs write+execute memory.
    assert value(kioskd, service, "MemoryDenyWriteExecute") in (None, "no")
    # ALSA devices: no PrivateDevices=, a closed device policy that lets char-alsa through.
    assert value(kioskd, service, "PrivateDevices") in (None, "no")
    assert value(kioskd, service, "DevicePolicy") == "closed"
    assert any(v.split()[0] == "char-alsa" and "r" in v and "w" in v for v in values(kioskd, service, "DeviceAllow"))
    # onnxruntime reads /proc/cpuinfo to pick its kernels.
    assert value(kioskd, service, "ProcSubset") in (None, "all")
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(words(kioskd, service, "RestrictAddressFamilies"))
    assert value(kioskd, service, "CapabilityBoundingSet") == ""
    assert value(kioskd, service, "ProtectSystem") == "strict"


def test_browser_unit_contract(browser: Unit) -> None:
    service = "Service"
    assert value(browser, service, "ExecStart") == INSTALLED_LAUNCHER
    assert value(browser, service, "Restart") == "always"
    assert seconds(browser, "RestartSec") == 2
    assert "kioskd.service" in words(browser, "Unit", "After")
    assert "kioskd.service" in words(browser, "Unit", "Wants")
    assert value(browser, service, "User")


def test_sysusers_creates_the_unit_user(tmp_path: Path, kioskd: Unit) -> None:
    (tmp_path / "etc").mkdir()
    conf = (UNITS / "kioskd.sysusers.conf").read_text()
    result = run(systemd_tool("systemd-sysusers"), f"--root={tmp_path}", "-", stdin=conf)
    noise = [line for line in result.stderr.splitlines() if not line.startswith("Creating ")]
    assert result.returncode == 0 and not noise, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    user = users[value(kioskd, "Service", "User") or ""]
    assert value(kioskd, "Service", "Group") in groups
    assert int(user[2]) < 1000 and user[6].endswith("nologin")  # a system user that cannot log in


# --- the browser launcher -----------------------------------------------------------------------------------

@dataclass
class Readyz:
    """A /readyz that answers 503 `not_ready_for` times (forever when None), then 200."""

    not_ready_for: int | None
    chromium_record: Path
    url: str = ""
    answers: list[int] = field(default_factory=list)
    answered_after_launch: list[int] = field(default_factory=list)

    def answer(self) -> int:
        status = 503 if self.not_ready_for is None or len(self.answers) < self.not_ready_for else 200
        self.answers.append(status)
        if self.chromium_record.exists():  # Chromium must not run before the 200 went out
            self.answered_after_launch.append(status)
        return status


@contextmanager
def readyz_server(readyz: Readyz) -> Iterator[Readyz]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = readyz.answer() if self.path == "/readyz" else 404
            body = b"ready\n" if status == 200 else b"loading\n"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="readyz", daemon=True)
    thread.start()
    readyz.url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
    try:
        yield readyz
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_program(path: Path, record: Path) -> Path:
    """A program that records its argv and environment as JSON in `record`, then exits 0."""
    return write_executable(path, (
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(record)!r}, 'w') as f:\n"
        "    json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, f)\n"))


@dataclass
class Rig:
    """A PATH holding only what the launcher may use (so the host's real Chromium is never found)."""

    tmp: Path
    bin: Path
    chromium: Path
    xset: Path

    def env(self, readyz_url: str, **extra: str) -> dict[str, str]:
        env = {"PATH": str(self.bin), "HOME": str(self.tmp / "home"), "XDG_RUNTIME_DIR": str(self.tmp / "run"),
               "KIOSK_PYTHON": sys.executable, "KIOSK_READY_URL": readyz_url, "KIOSK_URL": "http://127.0.0.1:9/",
               "KIOSK_READY_INTERVAL": "0.1", "KIOSK_READY_TIMEOUT": str(READY_DEADLINE_S),
               "KIOSK_PROFILE_DIR": str(self.tmp / "profile")}
        return {**env, **extra}

    def run(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(LAUNCHER)], env=env, capture_output=True, text=True,
                              timeout=READY_DEADLINE_S + 10, check=False)

    def recorded(self, record: Path) -> dict[str, object]:
        return dict(json.loads(record.read_text()))


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("id", "mkdir"):  # the launcher's only external commands besides Python and the browser
        (bindir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    for sub in ("home", "run"):
        (tmp_path / sub).mkdir()
    chromium = fake_program(bindir / "chromium", tmp_path / "chromium.json")
    xset = fake_program(bindir / "xset", tmp_path / "xset.json")
    return Rig(tmp_path, bindir, chromium, xset)


def test_launcher_waits_for_ready_then_starts_chromium(rig: Rig) -> None:
    record = rig.tmp / "chromium.json"
    with readyz_server(Readyz(not_ready_for=3, chromium_record=record)) as readyz:
        result = rig.run(rig.env(readyz.url))
    assert result.returncode == 0, result.stderr
    assert readyz.answers == [503, 503, 503, 200]
    assert readyz.answered_after_launch == [], "Chromium started before /readyz answered 200"
    argv = rig.recorded(record)["argv"]
    assert isinstance(argv, list)
    assert "--kiosk" in argv and argv[-1] == "http://127.0.0.1:9/"
    assert f"--user-data-dir={rig.tmp / 'profile'}" in argv
    assert {"--noerrdialogs", "--no-first-run", "--password-store=basic", "--disable-pinch"} <= set(argv)


TOUCH_KIOSK_FLAGS = {"--touch-events=enabled", "--disable-pinch", "--overscroll-history-navigation=0",
                     "--noerrdialogs", "--disable-session-crashed-bubble"}


def test_launcher_passes_the_touch_kiosk_flags(rig: Rig) -> None:
    record = rig.tmp / "chromium.json"
    with readyz_server(Readyz(not_ready_for=0, chromium_record=record)) as readyz:
        result = rig.run(rig.env(readyz.url, KIOSK_EXTRA_FLAGS="--force-device-scale-factor=1.25"))
    assert result.returncode == 0, result.stderr
    argv = rig.recorded(record)["argv"]
    assert isinstance(argv, list)
    missing = TOUCH_KIOSK_FLAGS - set(argv)
    assert not missing, f"kiosk-browser does not pass {sorted(missing)}"
    assert "--force-device-scale-factor=1.25" in argv and argv[-1] == "http://127.0.0.1:9/"
    assert argv.index("--touch-events=enabled") < argv.index("--force-device-scale-factor=1.25")  # extras last


@pytest.mark.parametrize("server_up", [True, False], ids=["readyz-503", "no-daemon"])
def test_launcher_gives_up_when_never_ready(rig: Rig, server_up: bool) -> None:
    record = rig.tmp / "chromium.json"
    with readyz_server(Readyz(not_ready_for=None, chromium_record=record)) as readyz:
        url = readyz.url if server_up else f"http://127.0.0.1:{closed_port()}/readyz"
        started = time.monotonic()
        result = rig.run(rig.env(url, KIOSK_READY_TIMEOUT="1"))
    assert result.returncode != 0
    assert "not ready" in result.stderr and url in result.stderr, result.stderr
    assert 1 <= time.monotonic() - started < 10
    assert not record.exists()
    if server_up:
        assert len(readyz.answers) >= 2 and set(readyz.answers) == {503}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket closes


def test_launcher_turns_off_x11_blanking(rig: Rig) -> None:
    (rig.tmp / "home/.Xauthority").write_text("")
    with readyz_server(Readyz(not_ready_for=0, chromium_record=rig.tmp / "chromium.json")) as readyz:
        result = rig.run(rig.env(readyz.url))
    assert result.returncode == 0, result.stderr
    assert rig.recorded(rig.tmp / "xset.json")["argv"] == ["s", "off", "-dpms", "s", "noblank"]
    env = rig.recorded(rig.tmp / "chromium.json")["env"]
    assert isinstance(env, dict)
    assert env["DISPLAY"] == ":0" and env["XAUTHORITY"] == str(rig.tmp / "home/.Xauthority")
    assert "WAYLAND_DISPLAY" not in env


def test_launcher_finds_the_wayland_compositor(rig: Rig) -> None:
    with socket.socket(socket.AF_UNIX) as compositor:
        compositor.bind(str(rig.tmp / "run/wayland-1"))
        (rig.tmp / "run/wayland-1.lock").write_text("")
        with readyz_server(Readyz(not_ready_for=0, chromium_record=rig.tmp / "chromium.json")) as readyz:
            result = rig.run(rig.env(readyz.url))
    assert result.returncode == 0, result.stderr
    env = rig.recorded(rig.tmp / "chromium.json")["env"]
    assert isinstance(env, dict)
    assert env["WAYLAND_DISPLAY"] == "wayland-1" and env["XDG_RUNTIME_DIR"] == str(rig.tmp / "run")
    assert not (rig.tmp / "xset.json").exists()


def test_launcher_falls_back_to_chromium_browser_and_python3(rig: Rig) -> None:
    rig.chromium.rename(rig.bin / "chromium-browser")  # older Raspberry Pi OS
    (rig.bin / "python3").symlink_to(sys.executable)
    with readyz_server(Readyz(not_ready_for=1, chromium_record=rig.tmp / "chromium.json")) as readyz:
        env = rig.env(readyz.url)
        del env["KIOSK_PYTHON"]
        result = rig.run(env)
    assert result.returncode == 0, result.stderr
    assert "chromium-browser" in result.stderr and readyz.answers == [503, 200]


def test_launcher_without_a_browser_fails_at_once(rig: Rig) -> None:
    rig.chromium.unlink()
    started = time.monotonic()
    result = rig.run(rig.env(f"http://127.0.0.1:{closed_port()}/readyz"))
    assert result.returncode != 0 and "no Chromium found" in result.stderr, result.stderr
    assert time.monotonic() - started < 10


def test_launcher_is_valid_posix_shell() -> None:
    for shell in ("sh", "dash"):
        if shutil.which(shell):
            result = run(shell, "-n", str(LAUNCHER))
            assert result.returncode == 0, f"{shell} -n: {result.stderr}"
    assert os.access(LAUNCHER, os.X_OK), "systemd/kiosk-browser must be executable"


def test_launcher_passes_shellcheck() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (optional: apt-get install shellcheck)")
    result = run("shellcheck", "--shell=sh", str(LAUNCHER))
    assert result.returncode == 0, result.stdout
