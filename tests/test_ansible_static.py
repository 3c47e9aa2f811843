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


def _rendered_config(tmp_path: Path, **variables: str) -> dict[str, object]:
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
                out.extend(_tasks(item[key]))  # type: ignore[arg-type]
    return out
