"""The fleet playbook under ansible/, checked statically: yamllint (ansible/.yamllint), ansible-lint's
`production` profile and `ansible-playbook --syntax-check`, all with the tools installed in this virtualenv
(the `test` extra pins them) and without any network access (no Galaxy downloads).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
TIMEOUT_S = 120


def tool(name: str) -> Path:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: install the test tools with `.venv/bin/pip install -e '.[test]'`")
    return path


def run(*args: str | Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # The venv's tools first (ansible-lint warns when its own directory is not on PATH), no colour codes,
        # no Galaxy: requirements.yml must not be fetched, and the tools must not write outside ansible/.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_LINT_OFFLINE": "1",
        "ANSIBLE_LINT_SKIP_SCHEMA_UPDATE": "1",
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(Path(os.environ.get("TMPDIR", "/tmp")) / "kioskd-ansible-local"),
        **extra_env,
    }
    return subprocess.run([str(a) for a in args], cwd=ANSIBLE, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")


def test_yamllint_is_clean() -> None:
    assert_ok(run(tool("yamllint"), "--strict", "--config-file", ANSIBLE / ".yamllint", "."))


def test_ansible_lint_production_profile_is_clean() -> None:
    result = run(tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor")
    assert_ok(result)
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_playbook_syntax() -> None:
    assert_ok(run(tool("ansible-playbook"), "--syntax-check", "-i", "inventory.example.yml", "site.yml"))


def test_every_role_default_is_prefixed_and_documented() -> None:
    import yaml  # ships with ansible-core

    readme = (ANSIBLE / "README.md").read_text(encoding="utf-8")
    roles = sorted(p for p in (ANSIBLE / "roles").iterdir() if p.is_dir())
    assert {r.name for r in roles} == {"kioskd_daemon", "kioskd_model", "kioskd_voice", "kioskd_display",
                                       "kioskd_audio"}
    for role in roles:
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text(encoding="utf-8"))
        for name in defaults:
            assert name.startswith(role.name + "_"), f"{role.name}: default {name} lacks the role prefix"
            assert f"`{name}`" in readme, f"{role.name}: default {name} is not documented in ansible/README.md"


def test_every_download_is_pinned_by_checksum() -> None:
    import yaml

    for path in sorted((ANSIBLE / "roles").rglob("tasks/*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text(encoding="utf-8")) or []):
            if "ansible.builtin.get_url" in task:
                checksum = str(task["ansible.builtin.get_url"].get("checksum", ""))
                assert checksum.startswith("sha256:"), f"{path}: get_url without a sha256 checksum"
            text = repr(task)
            assert "state: latest" not in text and "'latest'" not in text, f"{path}: unpinned 'latest'"


# The published checksums of the official voice files (alphacephei.com; rhasspy/piper-voices at v1.0.0).
PUBLISHED_VOICE_SHA256 = {
    "vosk-model-small-en-us-0.15.zip": "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
    "vosk-model-small-cn-0.22.zip": "3af8b0e7e0f835ae9d414ce5df580237a3cfb08d586c9fbbb0f7ff29ad5b14ba",
    "en_US-lessac-medium.onnx": "5efe09e69902187827af646e1a6e9d269dee769f9877d17b16b1b46eeaaf019f",
    "en_US-lessac-medium.onnx.json": "efe19c417bed055f2d69908248c6ba650fa135bc868b0e6abb3da181dab690a0",
    "zh_CN-huayan-medium.onnx": "9929917bf8cabb26fd528ea44d3a6699c11e87317a14765312420be230be0f3d",
    "zh_CN-huayan-medium.onnx.json": "d521dc45504a8ccc99e325822b35946dd701840bfb07e3dbb31a40929ed6a82b",
}


def test_the_official_voice_files_are_pinned_by_tag_and_published_checksum() -> None:
    import yaml

    defaults = yaml.safe_load((ANSIBLE / "roles" / "kioskd_voice" / "defaults" / "main.yml").read_text())
    base = defaults["kioskd_voice_piper_base_url"]
    assert base.endswith("/resolve/v1.0.0"), base  # a tag, never main: the .onnx.json files changed there
    files = [(m["url"], m["sha256"]) for m in defaults["kioskd_voice_vosk_models"]]
    for voice in defaults["kioskd_voice_piper_voices"]:
        files += [(voice["url"], voice["sha256"]), (voice["config_url"], voice["config_sha256"])]
    found = {url.replace("{{ kioskd_voice_piper_base_url }}", base).rsplit("/", 1)[1]: sha for url, sha in files}
    assert found == PUBLISHED_VOICE_SHA256
    assert all("/main/" not in url for url, _ in files)
    # The operators' table in ansible/README.md ("Voice") lists the same files and checksums.
    readme = (ANSIBLE / "README.md").read_text(encoding="utf-8")
    for name, sha256 in PUBLISHED_VOICE_SHA256.items():
        assert f"{name}` | `{sha256}` |" in readme, f"ansible/README.md: no row for {name} with {sha256}"


def _rendered_config(tmp_path: Path, **variables: object) -> dict[str, object]:
    """/etc/kioskd/config.toml as kioskd_daemon's template task writes it with the role's defaults and
    `variables` (rendered into tmp_path on this machine), parsed as TOML, as the daemon reads it."""
    import json
    import tomllib

    role = ANSIBLE / "roles" / "kioskd_daemon"
    dest = tmp_path / "config.toml"
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "name": "Render config.toml", "hosts": "localhost", "gather_facts": False, "connection": "local",
        "become": False, "vars_files": [str(role / "defaults" / "main.yml")],
        "tasks": [{"name": "Render config.toml", "ansible.builtin.template": {
            "src": str(role / "templates" / "config.toml.j2"), "dest": str(dest), "mode": "0600"}}],
    }]))
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"ansible_python_interpreter": sys.executable, **variables}))
    assert_ok(run(tool("ansible-playbook"), "-i", "localhost,", "-e", f"@{vars_file}", playbook))
    return tomllib.loads(dest.read_text(encoding="utf-8"))


def test_config_toml_names_the_knowledge_folder_only_when_one_is_set(tmp_path: Path) -> None:
    without = _rendered_config(tmp_path)
    assert "knowledge" not in without and without["model"] == "/var/lib/kioskd/models/current.gguf", without
    with_knowledge = _rendered_config(tmp_path, kioskd_knowledge_src="/srv/venue/knowledge")
    assert with_knowledge == {**without, "knowledge": "/etc/kioskd/knowledge"}


VOICE_DIR = "/var/lib/kioskd/voice"
# The daemon's voice settings that name models or phrases, written only while voice is on.
VOICE_KEYS = {"speech_model", "speech_model_zh", "tts_voice", "tts_voice_zh", "wake_phrase", "wake_phrase_zh", "vad",
              "vad_threshold", "listen_silence"}


def test_config_toml_has_voice_on_in_english_and_chinese_by_default(tmp_path: Path) -> None:
    """A site that sets nothing gets voice on with the links of the kioskd_voice role's default items (en, zh),
    push-to-talk (no wake phrase) and the daemon's own turn-taking defaults (the keys left out)."""
    import yaml

    config = _rendered_config(tmp_path)
    assert {key: config[key] for key in config if key in VOICE_KEYS | {"voice"}} == {
        "voice": True,
        "speech_model": f"{VOICE_DIR}/vosk-en", "speech_model_zh": f"{VOICE_DIR}/vosk-zh",
        "tts_voice": f"{VOICE_DIR}/piper-en.onnx", "tts_voice_zh": f"{VOICE_DIR}/piper-zh.onnx",
    }, config
    # Those links are the ones the voice role makes: vosk-<name> and piper-<name>.onnx of its default items.
    voice = yaml.safe_load((ANSIBLE / "roles" / "kioskd_voice" / "defaults" / "main.yml").read_text())
    assert voice["kioskd_voice_enabled"] is True
    assert [m["name"] for m in voice["kioskd_voice_vosk_models"]] == ["en", "zh"]
    assert [v["name"] for v in voice["kioskd_voice_piper_voices"]] == ["en", "zh"]
    # Nothing in the example inventory or the play turns it off again.
    for path in (ANSIBLE / "site.yml", ANSIBLE / "inventory.example.yml"):
        assert "kioskd_voice_enabled" not in path.read_text(), path


def test_switching_voice_off_for_a_host_turns_the_daemon_s_voice_off_too(tmp_path: Path) -> None:
    """kioskd_voice_enabled: false (a host or group variable) installs no models, and config.toml then says
    voice = false and names none of them (a text-only kiosk)."""
    config = _rendered_config(tmp_path, kioskd_voice_enabled=False)
    assert config["voice"] is False and not VOICE_KEYS & set(config), config
    assert {k: v for k, v in config.items() if k != "voice"} == {
        k: v for k, v in _rendered_config(tmp_path).items() if k not in VOICE_KEYS | {"voice"}}


def test_wake_phrases_and_turn_taking_are_written_only_when_the_site_sets_them(tmp_path: Path) -> None:
    config = _rendered_config(tmp_path, kioskd_daemon_wake_phrase="hello kiosk",
                              kioskd_daemon_wake_phrase_zh="你好小助手", kioskd_daemon_vad="energy",
                              kioskd_daemon_vad_threshold=0.6, kioskd_daemon_listen_silence=0.8)
    assert (config["wake_phrase"], config["wake_phrase_zh"]) == ("hello kiosk", "你好小助手"), config
    assert (config["vad"], config["vad_threshold"], config["listen_silence"]) == ("energy", 0.6, 0.8), config


def test_the_daemon_settings_the_fleet_writes_exist_in_the_daemon(tmp_path: Path) -> None:
    """Every key of the rendered config.toml is a daemon setting: the daemon refuses to start on an unknown one,
    so a key written before the daemon knows it would take the whole fleet down at the next deploy."""
    from daemon.settings import FIELDS

    config = _rendered_config(tmp_path, kioskd_daemon_wake_phrase="hello kiosk", kioskd_daemon_wake_phrase_zh="你好",
                              kioskd_daemon_vad="silero", kioskd_daemon_vad_threshold=0.5,
                              kioskd_daemon_listen_silence=0.5, kioskd_daemon_api_token="x",
                              kioskd_knowledge_src="/srv/venue/knowledge")
    assert set(config) - set(FIELDS) == set(), f"settings the daemon does not know: {set(config) - set(FIELDS)}"


def _voice_role_run(tmp_path: Path, label: str, mirror: Path, vosk: list[dict[str, str]],
                    piper: list[dict[str, str]]) -> subprocess.CompletedProcess[str]:
    """The kioskd_voice role's download tasks (vosk.yml, piper.yml; not main.yml, which installs unzip with apt)
    on this machine, from a file:// mirror into tmp_path/voice, as the current user."""
    import grp
    import json
    import pwd

    playbook = tmp_path / f"{label}.yml"
    include = [{"name": f"Install {kind}", "ansible.builtin.include_role": {"name": "kioskd_voice",
                                                                           "tasks_from": f"{kind}.yml"},
                "loop": f"{{{{ {items} }}}}", "loop_control": {"loop_var": "kioskd_voice_item"}}
               for kind, items in (("vosk", "kioskd_voice_vosk_models"), ("piper", "kioskd_voice_piper_voices"))]
    playbook.write_text(json.dumps([{
        "name": "Voice downloads", "hosts": "localhost", "gather_facts": False, "connection": "local",
        "become": False, "tasks": [{"name": "Create the voice directory", "ansible.builtin.file": {
            "path": str(tmp_path / "voice" / "releases"), "state": "directory", "mode": "0750"}}, *include],
    }]))
    vars_file = tmp_path / f"{label}-vars.json"
    vars_file.write_text(json.dumps({
        "ansible_python_interpreter": sys.executable, "kioskd_voice_dir": str(tmp_path / "voice"),
        "kioskd_voice_mirror_url": f"file://{mirror}", "kioskd_voice_owner": pwd.getpwuid(os.getuid()).pw_name,
        "kioskd_voice_group": grp.getgrgid(os.getgid()).gr_name, "kioskd_voice_vosk_models": vosk,
        "kioskd_voice_piper_voices": piper}))
    return run(tool("ansible-playbook"), "-i", "localhost,", "-e", f"@{vars_file}", playbook,
               ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"))


def test_voice_files_are_verified_not_fetched_twice_and_a_mismatch_fails_the_host(tmp_path: Path) -> None:
    """Both languages from a mirror (one file serving both names, as in the converge test): installed and linked;
    a second run changes nothing; a file that does not match its sha256 fails with get_url's message naming the
    file and both checksums, and links nothing."""
    import hashlib
    import re
    import zipfile

    mirror = tmp_path / "mirror"
    (mirror / "voice").mkdir(parents=True)
    archive = mirror / "voice" / "model.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("tiny-model/conf/model.conf", "--min-active=200\n")
    (mirror / "voice" / "voice.onnx").write_bytes(b"not really onnx")
    (mirror / "voice" / "voice.onnx.json").write_text("{}")

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    vosk = [{"name": name, "url": "unused-with-a-mirror", "sha256": sha(archive), "dirname": "tiny-model",
             "mirror_path": "voice/model.zip"} for name in ("en", "zh")]
    piper = [{"name": name, "url": "unused-with-a-mirror", "config_url": "unused-with-a-mirror",
              "sha256": sha(mirror / "voice" / "voice.onnx"),
              "config_sha256": sha(mirror / "voice" / "voice.onnx.json"),
              "mirror_path": "voice/voice.onnx"} for name in ("en", "zh")]

    def changed(result: subprocess.CompletedProcess[str]) -> int:
        return int(re.findall(r"changed=(\d+)", result.stdout)[-1])

    first = _voice_role_run(tmp_path, "first", mirror, vosk, piper)
    assert_ok(first)
    assert changed(first) > 0
    voice = tmp_path / "voice"
    for name in ("en", "zh"):
        assert (voice / f"vosk-{name}" / "conf" / "model.conf").is_file()
        assert (voice / f"piper-{name}.onnx").read_bytes() == b"not really onnx"
        assert (voice / f"piper-{name}.onnx.json").is_file()
    second = _voice_role_run(tmp_path, "second", mirror, vosk, piper)
    assert_ok(second)
    assert changed(second) == 0, second.stdout

    wrong = "0" * 64
    bad = _voice_role_run(tmp_path, "bad", mirror, [{**vosk[0], "name": "xx", "sha256": wrong}], [])
    assert bad.returncode != 0
    flat = " ".join(bad.stdout.split())
    assert "Download (verified by sha256) Vosk model xx" in flat and "did not match" in flat, bad.stdout
    assert wrong in flat and sha(archive) in flat, bad.stdout
    assert not (voice / "vosk-xx").exists() and not (voice / "releases" / wrong).exists()
    bad = _voice_role_run(tmp_path, "bad-piper", mirror, [], [{**piper[0], "name": "xx", "config_sha256": wrong}])
    assert bad.returncode != 0 and "did not match" in " ".join(bad.stdout.split()), bad.stdout
    assert not (voice / "piper-xx.onnx").exists()


def test_a_changed_knowledge_folder_reloads_and_the_unit_can_reload() -> None:
    """The knowledge tasks notify `kioskd reload` only (never a restart), whose handler is `systemctl reload`: that
    needs the unit's ExecReload= (systemd 252 has no Type=notify-reload). A changed config.toml restarts."""
    import yaml

    role = ANSIBLE / "roles" / "kioskd_daemon"

    def notified(path: Path) -> dict[str, object]:
        tasks = _tasks(yaml.safe_load(path.read_text(encoding="utf-8")))
        return {str(t["name"]): t["notify"] for t in tasks if "notify" in t}

    knowledge = notified(role / "tasks" / "knowledge.yml")
    assert knowledge and set(knowledge.values()) == {"kioskd reload"}, knowledge
    assert notified(role / "tasks" / "config.yml")["Write /etc/kioskd/config.toml"] == "kioskd restart"
    handlers = yaml.safe_load((role / "handlers" / "main.yml").read_text(encoding="utf-8"))
    (reload,) = [h for h in handlers if h.get("listen") == "kioskd reload"]
    assert reload["ansible.builtin.systemd_service"]["state"] == "reloaded", reload
    # Handlers run in the order they are written: the reload must know about a restart in the same run.
    names = [h["name"] for h in handlers]
    assert names.index("Note that kioskd restarts") < names.index("Reload kioskd") < names.index("Restart kioskd")
    unit = (ROOT / "systemd" / "kioskd.service").read_text(encoding="utf-8").splitlines()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit


def test_a_knowledge_folder_reaches_the_live_path_only_after_the_release_checked_it() -> None:
    """The daemon refuses to start with a folder it cannot index (SIGHUP only logs it): the files go to a staging
    copy, the release being deployed runs `kioskd knowledge check` on it, and only then is it renamed into place."""
    import yaml

    role = ANSIBLE / "roles" / "kioskd_daemon"
    main = [t["name"] for t in yaml.safe_load((role / "tasks" / "main.yml").read_text(encoding="utf-8"))]
    assert main.index("Install the release") < main.index("Copy the venue's knowledge folder"), main
    tasks = _tasks(yaml.safe_load((role / "tasks" / "knowledge.yml").read_text(encoding="utf-8")))
    names = [str(t["name"]) for t in tasks]
    by_name = dict(zip(names, tasks, strict=True))
    copy = by_name["Copy the knowledge files into the staging copy"]["ansible.builtin.copy"]
    assert copy["dest"] == "{{ kioskd_daemon_knowledge_staging }}/", copy
    check = by_name["Check the staging copy with the release's kioskd"]
    argv = check["ansible.builtin.command"]["argv"]
    assert argv[-4:] == ["{{ kioskd_daemon_release_dir }}/venv/bin/kioskd", "knowledge", "check",
                         "{{ kioskd_daemon_knowledge_staging }}"], argv
    assert check["changed_when"] is False, check
    swap = "Put the checked knowledge folder in place"
    assert names.index("Check the staging copy with the release's kioskd") \
        < names.index("Refuse a knowledge folder the daemon cannot use") < names.index(swap), names
    assert "kioskd_daemon_knowledge_check.stderr" in by_name["Refuse a knowledge folder the daemon cannot use"][
        "ansible.builtin.fail"]["msg"]
    # Only the swap touches the live folder, and only it reloads.
    assert [n for n, t in by_name.items() if "notify" in t] == [swap]
    rollback = [str(t["name"]) for t in yaml.safe_load((role / "tasks" / "rollback.yml").read_text(encoding="utf-8"))]
    assert "Remove the knowledge staging copy this run left" in rollback, rollback


def _tasks(items: list[dict[str, object]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for item in items:
        out.append(item)
        for key in ("block", "rescue", "always"):
            if isinstance(item.get(key), list):
                out.extend(_tasks(item[key]))
    return out


def _gated_rollout_playbook(path: Path, role: str, deploy: list[str], after_gate: list[str], gate_passes: bool
                            ) -> Path:
    """A playbook at `path` that runs `role`'s task files `deploy` on this machine inside site.yml's block and
    rescue: a readiness gate that passes or fails, then `after_gate`; the rescue is the role's rollback.yml."""
    import json

    def role_tasks(name: str) -> dict[str, object]:
        return {"name": f"Run {name}", "ansible.builtin.import_role": {"name": role, "tasks_from": name}}

    gate = {"name": "Require /readyz (stands in for verify.yml)", "ansible.builtin.fail": {"msg": "never ready"},
            "when": not gate_passes}
    path.write_text(json.dumps([{
        "name": f"{role} rollout", "hosts": "localhost", "gather_facts": False, "connection": "local",
        "become": False, "tasks": [{"name": "Deploy, then require readiness or roll back", "block": [
            *map(role_tasks, deploy), gate, *map(role_tasks, after_gate),
        ], "rescue": [role_tasks("rollback.yml"),
                      {"name": "Fail the host", "ansible.builtin.fail": {"msg": "rolled back"}}]}],
    }]))
    return path


def _knowledge_rollout(tmp_path: Path, label: str, source: Path | None, gate_passes: bool
                       ) -> subprocess.CompletedProcess[str]:
    """kioskd_daemon's knowledge tasks on this machine, inside site.yml's block and rescue: knowledge.yml (checked
    by this venv's real `kioskd knowledge check`), then a readiness gate that passes or fails, then the drop of
    the kept folder; the rescue is the role's rollback.yml (no systemctl: kioskd_daemon_manage_service false)."""
    import grp
    import json

    playbook = _gated_rollout_playbook(tmp_path / f"{label}.yml", "kioskd_daemon", ["knowledge.yml"],
                                       ["knowledge_kept.yml"], gate_passes)
    release = tmp_path / "release"
    (release / "venv" / "bin").mkdir(parents=True, exist_ok=True)
    kioskd = release / "venv" / "bin" / "kioskd"
    if not kioskd.exists():
        kioskd.symlink_to(BIN / "kioskd")
    vars_file = tmp_path / f"{label}-vars.json"
    vars_file.write_text(json.dumps({
        "ansible_python_interpreter": sys.executable, "kioskd_daemon_manage_service": False,
        "kioskd_daemon_knowledge_src": str(source or ""), "kioskd_daemon_knowledge_dir": str(tmp_path / "knowledge"),
        "kioskd_daemon_config_dir": str(tmp_path), "kioskd_daemon_prefix": str(tmp_path / "opt"),
        "kioskd_daemon_release_dir": str(release), "kioskd_daemon_user": "root",
        "kioskd_daemon_group": grp.getgrgid(os.getgid()).gr_name}))
    return run(tool("ansible-playbook"), "-i", "localhost,", "-e", f"@{vars_file}", playbook,
               ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"))


def _folder(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text(encoding="utf-8") for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_knowledge_folder_swapped_in_by_a_run_that_fails_its_gate_is_rolled_back(tmp_path: Path) -> None:
    """The folder a swap replaces is kept as <dir>.previous until the readiness gate passed: a run whose gate fails
    gets the old folder back (also after removing the folder because none is set any more); a run that passes
    drops the kept copy, and a run that changes nothing keeps and drops nothing (changed=0)."""
    import re

    if os.geteuid() != 0:
        pytest.skip("the knowledge tasks give the files to root (as on a kiosk)")
    live, kept = tmp_path / "knowledge", tmp_path / "knowledge.previous"
    old = {"hours.md": "# Opening hours\n\nThe library opens at 9:00.\n"}
    new = {"hours.md": "# Opening hours\n\nThe library opens at 8:30.\n", "faq/parking.md": "# Parking\n\nBehind.\n"}
    sources = {}
    for label, files in (("old", old), ("new", new)):
        sources[label] = tmp_path / f"source-{label}"
        for name, text in files.items():
            (sources[label] / name).parent.mkdir(parents=True, exist_ok=True)
            (sources[label] / name).write_text(text, encoding="utf-8")

    def rollout(label: str, source: Path | None, gate_passes: bool) -> tuple[dict[str, int], str]:
        result = _knowledge_rollout(tmp_path, label, source, gate_passes)
        recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", result.stdout.split("PLAY RECAP")[-1])}
        assert (result.returncode == 0) == gate_passes, result.stdout[-3000:]
        leftovers = {p.name for p in tmp_path.glob("knowledge.*")}
        assert not leftovers, (label, leftovers, result.stdout[-3000:])  # nothing kept once the run is over
        return recap, result.stdout

    recap, _ = rollout("install", sources["old"], gate_passes=True)
    assert _folder(live) == old and recap["changed"] > 0, recap

    recap, output = rollout("new-fails", sources["new"], gate_passes=False)
    assert recap["rescued"] == 1, recap
    assert "changed: [localhost]" in output.split("TASK [kioskd_daemon : Put the checked knowledge folder in place]")[1]
    assert _folder(live) == old  # swapped in, then put back by the rescue
    recap, _ = rollout("new", sources["new"], gate_passes=True)
    assert _folder(live) == new and recap["rescued"] == 0, recap
    recap, _ = rollout("new-again", sources["new"], gate_passes=True)
    assert recap["changed"] == 0, recap  # nothing swapped: nothing kept, nothing dropped

    recap, _ = rollout("off-fails", None, gate_passes=False)
    assert _folder(live) == new and recap["rescued"] == 1, recap  # set aside, then put back
    recap, _ = rollout("off", None, gate_passes=True)
    assert not live.exists() and not kept.exists() and recap["changed"] > 0, recap


def _model_rollout(tmp_path: Path, label: str, model: Path, gate_passes: bool) -> subprocess.CompletedProcess[str]:
    """kioskd_model's tasks on this machine inside site.yml's block and rescue: main.yml from a file:// mirror
    (verified by sha256), then a readiness gate that passes or fails; the rescue is the role's rollback.yml."""
    import grp
    import hashlib
    import json
    import pwd

    playbook = _gated_rollout_playbook(tmp_path / f"{label}.yml", "kioskd_model", ["main.yml"], [], gate_passes)
    vars_file = tmp_path / f"{label}-vars.json"
    vars_file.write_text(json.dumps({
        "ansible_python_interpreter": sys.executable, "kioskd_model_mirror_url": f"file://{model.parent}",
        "kioskd_model_mirror_path": model.name, "kioskd_model_filename": model.name,
        "kioskd_model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "kioskd_model_dir": str(tmp_path / "models"), "kioskd_model_owner": pwd.getpwuid(os.getuid()).pw_name,
        "kioskd_model_group": grp.getgrgid(os.getgid()).gr_name}))
    return run(tool("ansible-playbook"), "-i", "localhost,", "-e", f"@{vars_file}", playbook,
               ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"))


def test_a_model_that_fails_its_gate_is_switched_back_and_the_next_run_clears_it(tmp_path: Path) -> None:
    """current.gguf is switched to a new model whose sha256 matches; when the gate fails, the rescue points it
    at the model in service before; the next run of the good model removes the failed one and then nothing
    changes. (The converge test does the same with a real daemon that cannot load a truncated GGUF.)"""
    import re

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    good, corrupt = mirror / "good.gguf", mirror / "corrupt.gguf"
    good.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # right sha256, half a model
    current, models = tmp_path / "models" / "current.gguf", tmp_path / "models" / "releases"

    def rollout(label: str, model: Path, gate_passes: bool) -> dict[str, int]:
        result = _model_rollout(tmp_path, label, model, gate_passes)
        assert (result.returncode == 0) == gate_passes, result.stdout[-3000:]
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", result.stdout.split("PLAY RECAP")[-1])}

    rollout("install", good, gate_passes=True)
    assert current.resolve().read_bytes() == good.read_bytes()
    recap = rollout("corrupt", corrupt, gate_passes=False)
    assert recap["rescued"] == 1, recap
    assert current.resolve().read_bytes() == good.read_bytes()  # switched, then switched back
    assert len(list(models.iterdir())) == 2  # the failed model stays until a run succeeds
    recap = rollout("after", good, gate_passes=True)
    assert recap["changed"] == 1 and len(list(models.iterdir())) == 1, recap  # the failed model removed
    assert rollout("again", good, gate_passes=True)["changed"] == 0
