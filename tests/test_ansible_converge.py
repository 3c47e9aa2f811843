"""Converge test of the fleet playbook (ansible/site.yml): the real `ansible-playbook` provisions a fresh Debian 12
root (debootstrap) through the `community.general.chroot` connection, from an offline mirror served on 127.0.0.1
(the kioskd wheel built from this repository, a wheelhouse of its dependencies with a hashed lock, the SmolLM2
test model); a second run must change nothing; then the installed daemon, started inside the root as the
`kioskd` user with the `config.toml` the playbook wrote, must answer 200 on /readyz.

No systemd runs in a chroot: `kioskd_daemon_manage_service: false` and the display role is off
(`kioskd_display_enabled: false`: Chromium and a display manager cannot be exercised here); voice is off
(no verified sha256 for the Vosk and Piper downloads yet, see ansible/README.md).

Slow (a few minutes; debootstrap on first use): `make test-slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import ansible_host
from tests.conftest import TEST_MODEL, free_port, pulled_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

HOST = "converge-kiosk"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
READY_TIMEOUT_S = 120


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the installed daemon exited {proc.returncode} before /readyz:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
                last = str(response.status)
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.5)
    pytest.fail(f"/readyz not 200 within {timeout} s (last: {last}):\n{log.read_text()[-4000:]}")


def test_site_converges_on_a_debian_root_and_the_daemon_gets_ready() -> None:
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    try:
        work = ansible_host.CACHE / "run"
        root = ansible_host.fresh_root(work / "root")
    except ansible_host.HostUnavailable as exc:
        pytest.skip(str(exc))
    model = pulled_model(TEST_MODEL)
    assert ansible_host.sha256(model) == MODEL_SHA256
    mirror = work / "mirror"
    release = ansible_host.build_mirror(mirror, model)

    with ansible_host.serve(mirror) as mirror_url:
        wheel_url = f"{mirror_url}/wheels/{release['kioskd_daemon_wheel_file']}"
        extra_vars = {
            "kioskd_mirror_url": mirror_url,
            "kioskd_rollout_serial": 1,
            # The daemon: the wheel of this repository, its locked dependencies from the mirror's wheelhouse.
            "kioskd_daemon_wheel_url": wheel_url,
            "kioskd_daemon_wheel_sha256": release["kioskd_daemon_wheel_sha256"],
            "kioskd_daemon_requirements": release["kioskd_daemon_requirements"],
            "kioskd_daemon_manage_service": False,
            "kioskd_daemon_voice": False,
            "kioskd_daemon_n_ctx": 2048,
            # The model: SmolLM2 from the mirror, checked against its real sha256.
            "kioskd_model_filename": model.name,
            "kioskd_model_url": f"{mirror_url}/models/{model.name}",
            "kioskd_model_sha256": MODEL_SHA256,
            "kioskd_voice_enabled": False,
            "kioskd_display_enabled": False,
            "kioskd_display_manage_service": False,
        }
        vars_file = work / "extra-vars.json"
        vars_file.write_text(json.dumps(extra_vars, indent=2))
        inventory = ansible_host.write_inventory(work / "inventory.json", HOST, root)

        first = ansible_host.run_playbook(inventory, vars_file, work / "first-run.log")
        assert first.returncode == 0, f"first run failed, see {work / 'first-run.log'}:\n{first.stdout[-6000:]}"
        counts = ansible_host.recap(first.stdout, HOST)
        assert counts["failed"] == 0 and counts["unreachable"] == 0 and counts["rescued"] == 0, counts
        assert counts["changed"] > 0, counts

        second = ansible_host.run_playbook(inventory, vars_file, work / "second-run.log")
        assert second.returncode == 0, f"second run failed, see {work / 'second-run.log'}:\n{second.stdout[-6000:]}"
        counts = ansible_host.recap(second.stdout, HOST)
        changed_tasks = [line for line in second.stdout.splitlines() if line.startswith("changed:")]
        assert counts["changed"] == 0, f"second run not idempotent: {counts}\n" + "\n".join(changed_tasks)

    # What the playbook laid out (the links are absolute inside the root: resolve them there).
    def resolved(path: str) -> str:
        return ansible_host.in_root(root, "readlink", "-f", path).strip()

    assert resolved("/opt/kioskd/venv") == "/opt/kioskd/releases/0.1.0/venv"
    assert resolved("/var/lib/kioskd/models/current.gguf") == (
        f"/var/lib/kioskd/models/releases/{MODEL_SHA256}/{model.name}")
    config = (root / "etc/kioskd/config.toml").read_text()
    assert 'model = "/var/lib/kioskd/models/current.gguf"' in config
    assert "voice = false" in config

    # The daemon as its unit would run it: the kioskd user, systemd's directories, the playbook's config.toml.
    port = free_port()
    log = work / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["chroot", "--userspec=kioskd:kioskd", "--groups=audio", str(root), "/usr/bin/env", "-i",
             "PATH=/usr/bin:/bin", "HOME=/var/lib/kioskd", "STATE_DIRECTORY=/var/lib/kioskd",
             "XDG_CACHE_HOME=/var/cache/kioskd", "PYTHONUNBUFFERED=1", "LC_ALL=C.UTF-8",
             "/opt/kioskd/venv/bin/kioskd", "serve", "--config", "/etc/kioskd/config.toml", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log, READY_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    # Passed: drop the provisioned root and the mirror (about 1 GB); the logs stay in .cache/converge/run.
    shutil.rmtree(root)
    shutil.rmtree(mirror)
