"""The fleet's upstream inference server variables (ansible/README.md, "Upstream inference server"), run for real
on this machine: the kioskd_daemon role's config.toml template, a token encrypted with the real `ansible-vault`
and written by a real `ansible-playbook` (connection local, into a temporary directory), the checks that refuse
bad variables, and the kioskd_model role skipping its download when a kiosk has no local model.
"""

from __future__ import annotations

import grp
import http.server
import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_ansible_static import ANSIBLE, _rendered_config, assert_ok, run, tool

TOKEN = "sk-kiosk-upstream-7f3a9c1e5b"
VAULT_PASSWORD = "building-a-vault-password"
UPSTREAM = {"kioskd_daemon_engine": "upstream", "kioskd_daemon_upstream_url": "http://10.0.0.5:8080/v1",
            "kioskd_daemon_upstream_model": "qwen2.5-7b-instruct"}
UPSTREAM_KEYS = {"engine", "upstream_url", "upstream_model", "upstream_token_file", "upstream_fallback",
                 "upstream_connect_timeout", "upstream_first_token_timeout", "upstream_read_timeout",
                 "upstream_health_interval", "upstream_parallel"}


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", result.stdout.split("PLAY RECAP")[-1])}


# --- config.toml ---------------------------------------------------------------------------------------------

def test_a_local_kiosk_s_config_toml_has_no_upstream_setting(tmp_path: Path) -> None:
    """The default engine writes nothing new, so a local kiosk's file (and an older release reading it) is as
    before; a URL left in the group while a host is switched back to local is not written either."""
    config = _rendered_config(tmp_path)
    assert not UPSTREAM_KEYS & set(config), config
    assert _rendered_config(tmp_path, kioskd_daemon_upstream_url="http://10.0.0.5:8080/v1") == config


def test_an_upstream_group_s_config_toml_names_the_token_file_never_the_token(tmp_path: Path) -> None:
    config = _rendered_config(tmp_path, **UPSTREAM, kioskd_daemon_upstream_token=TOKEN,
                              kioskd_daemon_upstream_first_token_timeout=8, kioskd_daemon_upstream_parallel=4)
    assert {k: config[k] for k in UPSTREAM_KEYS & set(config)} == {
        "engine": "upstream", "upstream_url": "http://10.0.0.5:8080/v1", "upstream_model": "qwen2.5-7b-instruct",
        "upstream_token_file": "/etc/kioskd/upstream_token", "upstream_fallback": True,
        "upstream_first_token_timeout": 8, "upstream_parallel": 4,
    }, config
    # The fallback is the usual local model.
    assert config["model"] == "/var/lib/kioskd/models/current.gguf"
    assert TOKEN not in (tmp_path / "config.toml").read_text(encoding="utf-8")


def test_without_a_fallback_config_toml_names_no_local_model(tmp_path: Path) -> None:
    config = _rendered_config(tmp_path, **UPSTREAM, kioskd_daemon_upstream_fallback=False)
    assert config["upstream_fallback"] is False and "model" not in config, config
    assert "upstream_token_file" not in config  # no token: none named


def test_the_daemon_accepts_the_upstream_settings_the_fleet_writes(tmp_path: Path) -> None:
    """The rendered file, with the token file where it names it, loads in the daemon's own settings parser
    (an unknown key or a wrong type would stop every kiosk of the group at start)."""
    from daemon.settings import load_settings

    (tmp_path / "upstream_token").write_text(TOKEN + "\n")
    _rendered_config(tmp_path, **UPSTREAM, kioskd_daemon_upstream_token=TOKEN, kioskd_daemon_config_dir=str(tmp_path),
                     kioskd_daemon_upstream_fallback=False, kioskd_daemon_upstream_connect_timeout=2.5,
                     kioskd_daemon_upstream_first_token_timeout=10, kioskd_daemon_upstream_read_timeout=20,
                     kioskd_daemon_upstream_health_interval=3, kioskd_daemon_upstream_parallel=16)
    settings = load_settings(config=tmp_path / "config.toml", environ={})
    assert (settings.engine, settings.upstream_url, settings.upstream_model) == (
        "upstream", "http://10.0.0.5:8080/v1", "qwen2.5-7b-instruct")
    assert settings.upstream_token_file == tmp_path / "upstream_token" and settings.upstream_fallback is False
    assert (settings.upstream_connect_timeout, settings.upstream_first_token_timeout, settings.upstream_read_timeout,
            settings.upstream_health_interval, settings.upstream_parallel) == (2.5, 10.0, 20.0, 3.0, 16)


# --- a real run with a vault-encrypted token -----------------------------------------------------------------

def _encrypted_group_vars(tmp_path: Path, token: str) -> Path:
    """group_vars as ansible/README.md shows them: the token encrypted with `ansible-vault encrypt_string`
    (a password file of the test's own) and the role variable pointing at the vault variable."""
    password_file = tmp_path / "vault-password"
    password_file.write_text(VAULT_PASSWORD + "\n")
    password_file.chmod(0o600)
    encrypted = run(tool("ansible-vault"), "encrypt_string", "--vault-password-file", password_file,
                    "--name", "vault_kioskd_upstream_token", token)
    assert_ok(encrypted)
    assert token not in encrypted.stdout and "!vault |" in encrypted.stdout, encrypted.stdout
    group_vars = tmp_path / "building_a.yml"
    group_vars.write_text(encrypted.stdout + 'kioskd_daemon_upstream_token: "{{ vault_kioskd_upstream_token }}"\n')
    return group_vars


def _upstream_run(tmp_path: Path, label: str, group_vars: Path | None, **variables: object
                  ) -> subprocess.CompletedProcess[str]:
    """kioskd_daemon's upstream checks, token and drop-in, settings and post-gate clean-up on this machine, as
    site.yml orders them, with the config directory and drop-in directory in tmp_path (no systemctl)."""
    playbook = tmp_path / f"{label}.yml"

    def role_tasks(name: str) -> dict[str, object]:
        return {"name": f"Run {name}", "ansible.builtin.import_role": {"name": "kioskd_daemon", "tasks_from": name}}

    playbook.write_text(json.dumps([{
        "name": "Upstream settings", "hosts": "localhost", "gather_facts": False, "connection": "local",
        "become": False, "tasks": [role_tasks(name) for name in (
            "upstream_check.yml", "upstream.yml", "config.yml", "upstream_unused.yml")],
    }]))
    vars_file = tmp_path / f"{label}-vars.json"
    vars_file.write_text(json.dumps({
        "ansible_python_interpreter": sys.executable, "kioskd_daemon_manage_service": False,
        "kioskd_daemon_config_dir": str(tmp_path / "etc"), "kioskd_daemon_group": grp.getgrgid(os.getgid()).gr_name,
        "kioskd_daemon_upstream_dropin_dir": str(tmp_path / "kioskd.service.d"), **variables}))
    extra = ["-e", f"@{group_vars}", "--vault-password-file", str(tmp_path / "vault-password")] if group_vars else []
    (tmp_path / "etc").mkdir(exist_ok=True)
    # --diff and -v: the token must stay hidden even where Ansible shows the most.
    return run(tool("ansible-playbook"), "-i", "localhost,", "--diff", "-v", "-e", f"@{vars_file}", *extra,
               playbook, ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"))


def test_a_vaulted_token_reaches_the_kiosk_only_in_its_token_file(tmp_path: Path) -> None:
    group_vars = _encrypted_group_vars(tmp_path, TOKEN)
    assert TOKEN not in group_vars.read_text()
    result = _upstream_run(tmp_path, "first", group_vars, **UPSTREAM)
    assert_ok(result)
    token_file, config = tmp_path / "etc" / "upstream_token", tmp_path / "etc" / "config.toml"
    assert token_file.read_text() == TOKEN + "\n"
    mode = token_file.stat()
    assert (stat.S_IMODE(mode.st_mode), mode.st_uid, mode.st_gid) == (0o640, 0, os.getgid())
    assert TOKEN not in config.read_text() and f'upstream_token_file = "{token_file}"' in config.read_text()
    assert TOKEN not in result.stdout + result.stderr
    assert "the output has been hidden" in result.stdout  # the token task ran, under no_log
    # The unit only allows loopback: the drop-in adds the upstream's address.
    dropin = (tmp_path / "kioskd.service.d" / "upstream.conf").read_text()
    assert "IPAddressAllow=10.0.0.5\n" in dropin and "After=network-online.target" in dropin, dropin

    again = _upstream_run(tmp_path, "again", group_vars, **UPSTREAM)
    assert_ok(again)
    assert recap(again)["changed"] == 0, again.stdout[-3000:]


def test_the_example_group_vars_decrypt_and_point_the_group_at_the_upstream(tmp_path: Path) -> None:
    """ansible/group_vars.example/building_a.yml, with the placeholder password it names, passes the checks and
    gives its kiosks the upstream settings and a token file."""
    (tmp_path / "vault-password").write_text("example-only\n")
    result = _upstream_run(tmp_path, "example", ANSIBLE / "group_vars.example" / "building_a.yml")
    assert_ok(result)
    assert (tmp_path / "etc" / "upstream_token").read_text() == "replace-me-with-the-upstream-api-key\n"
    config = (tmp_path / "etc" / "config.toml").read_text()
    assert 'engine = "upstream"' in config and 'upstream_url = "http://10.20.0.5:8080/v1"' in config, config
    assert "IPAddressAllow=10.20.0.5\n" in (tmp_path / "kioskd.service.d" / "upstream.conf").read_text()
    assert "replace-me" not in result.stdout + result.stderr


def test_a_rotated_token_reloads_the_daemon_instead_of_restarting_it(tmp_path: Path) -> None:
    _upstream_run(tmp_path, "first", _encrypted_group_vars(tmp_path, TOKEN), **UPSTREAM)
    rotated = "sk-kiosk-upstream-rotated-42"
    result = _upstream_run(tmp_path, "rotated", _encrypted_group_vars(tmp_path, rotated), **UPSTREAM)
    assert_ok(result)
    assert (tmp_path / "etc" / "upstream_token").read_text() == rotated + "\n"
    assert rotated not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr
    handlers = re.findall(r"RUNNING HANDLER \[kioskd_daemon : ([^\]]+)\]", result.stdout)
    assert "Reload kioskd" in handlers and "Restart kioskd" not in handlers, handlers
    assert recap(result)["changed"] == 1, result.stdout[-3000:]  # the token file alone


def test_a_kiosk_moved_back_to_local_drops_its_token_and_drop_in_after_the_gate(tmp_path: Path) -> None:
    group_vars = _encrypted_group_vars(tmp_path, TOKEN)
    assert_ok(_upstream_run(tmp_path, "upstream", group_vars, **UPSTREAM))
    result = _upstream_run(tmp_path, "local", None, kioskd_daemon_engine="local")
    assert_ok(result)
    assert not (tmp_path / "etc" / "upstream_token").exists()
    assert not (tmp_path / "kioskd.service.d" / "upstream.conf").exists()
    assert "upstream" not in (tmp_path / "etc" / "config.toml").read_text()


def test_a_host_name_upstream_is_allowed_by_the_addresses_given(tmp_path: Path) -> None:
    result = _upstream_run(tmp_path, "named", None, **{
        **UPSTREAM, "kioskd_daemon_upstream_url": "https://gpu.building-a.example:8443/v1",
        "kioskd_daemon_upstream_allowed_ips": ["10.0.0.5", "10.0.0.53"]})
    assert_ok(result)
    assert "IPAddressAllow=10.0.0.5 10.0.0.53\n" in (tmp_path / "kioskd.service.d" / "upstream.conf").read_text()


# --- bad variables fail clearly, before anything changes -----------------------------------------------------

@pytest.mark.parametrize(("variables", "message"), [
    ({"kioskd_daemon_engine": "upstream"}, "kioskd_daemon_engine is upstream but kioskd_daemon_upstream_url is empty"),
    ({**UPSTREAM, "kioskd_daemon_upstream_url": "10.0.0.5:8080/v1"},
     'kioskd_daemon_upstream_url is "10.0.0.5:8080/v1"'),
    ({"kioskd_daemon_engine": "remote"}, "kioskd_daemon_engine must be local or upstream (it is remote)"),
    ({**UPSTREAM, "kioskd_daemon_upstream_first_token_timeout": 0}, "must be seconds above 0"),
    ({**UPSTREAM, "kioskd_daemon_upstream_parallel": "many"}, "kioskd_daemon_upstream_parallel a whole number"),
    ({**UPSTREAM, "kioskd_daemon_upstream_allowed_ips": "10.0.0.5"},
     "kioskd_daemon_upstream_allowed_ips must be a list of IP addresses or prefixes"),
    ({**UPSTREAM, "kioskd_daemon_upstream_allowed_ips": ["gpu.building-a.example"]},
     "kioskd_daemon_upstream_allowed_ips must be a list of IP addresses or prefixes"),
    ({**UPSTREAM, "kioskd_daemon_upstream_url": "http://gpu.building-a.example:8080/v1"},
     "names the host gpu.building-a.example, and the kioskd unit allows only the addresses it is given"),
])
def test_bad_upstream_variables_fail_with_their_names(tmp_path: Path, variables: dict[str, object],
                                                      message: str) -> None:
    result = _upstream_run(tmp_path, "bad", None, **variables)
    assert result.returncode != 0 and message in " ".join(result.stdout.split()), result.stdout[-3000:]
    assert not list((tmp_path / "etc").iterdir())  # nothing written


def test_a_vaulted_token_without_an_upstream_fails_without_showing_it(tmp_path: Path) -> None:
    result = _upstream_run(tmp_path, "stray", _encrypted_group_vars(tmp_path, TOKEN))
    assert result.returncode != 0
    assert "kioskd_daemon_upstream_token is set but kioskd_daemon_engine is local" in " ".join(result.stdout.split())
    assert TOKEN not in result.stdout + result.stderr
    assert not list((tmp_path / "etc").iterdir())


# --- no local model without a fallback ------------------------------------------------------------------------

@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server of the test's own on 127.0.0.1 serving one small file as a model; records each GET."""
    model = tmp_path / "served" / "tiny.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(model.parent), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tiny.gguf", requests
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _model_run(tmp_path: Path, url: str, **variables: object) -> subprocess.CompletedProcess[str]:
    import hashlib
    import pwd

    playbook = tmp_path / "model.yml"
    playbook.write_text(json.dumps([{
        "name": "Chat model", "hosts": "localhost", "gather_facts": False, "connection": "local", "become": False,
        "tasks": [{"name": "Install the chat model", "ansible.builtin.import_role": {"name": "kioskd_model"}}],
    }]))
    vars_file = tmp_path / "model-vars.json"
    vars_file.write_text(json.dumps({
        "ansible_python_interpreter": sys.executable, "kioskd_model_url": url, "kioskd_model_filename": "tiny.gguf",
        "kioskd_model_sha256": hashlib.sha256((tmp_path / "served" / "tiny.gguf").read_bytes()).hexdigest(),
        "kioskd_model_dir": str(tmp_path / "models"), "kioskd_model_owner": pwd.getpwuid(os.getuid()).pw_name,
        "kioskd_model_group": grp.getgrgid(os.getgid()).gr_name, **variables}))
    return run(tool("ansible-playbook"), "-i", "localhost,", "-e", f"@{vars_file}", playbook,
               ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"))


def test_an_upstream_kiosk_without_a_fallback_downloads_no_model(tmp_path: Path,
                                                                 model_server: tuple[str, list[str]]) -> None:
    url, requests = model_server
    result = _model_run(tmp_path, url, **UPSTREAM, kioskd_daemon_upstream_fallback=False)
    assert_ok(result)
    assert requests == [] and not (tmp_path / "models").exists(), requests
    assert recap(result)["changed"] == 0 and "TASK [kioskd_model : Download the model" in result.stdout


def test_an_upstream_kiosk_with_a_fallback_gets_the_local_model(tmp_path: Path,
                                                                model_server: tuple[str, list[str]]) -> None:
    url, requests = model_server
    assert_ok(_model_run(tmp_path, url, **UPSTREAM))  # kioskd_daemon_upstream_fallback: true, the default
    assert requests == ["/tiny.gguf"]
    assert (tmp_path / "models" / "current.gguf").resolve().read_bytes() == (tmp_path / "served" / "tiny.gguf"
                                                                                ).read_bytes()


def test_site_yml_checks_the_upstream_before_any_change_and_cleans_up_after_the_gate() -> None:
    """The order site.yml runs: the checks in pre_tasks, before the first task that changes a host; the token and
    drop-in of a kiosk no longer on an upstream removed only after the readiness gate."""
    listed = run(tool("ansible-playbook"), "--list-tasks", "-i", "inventory.example.yml", "site.yml")
    assert_ok(listed)
    tasks = [line.split("\t")[0].strip() for line in listed.stdout.splitlines() if "\tTAGS:" in line]
    first_change = tasks.index("kioskd_audio : Install PortAudio and the ALSA tools")
    assert tasks.index("kioskd_daemon : Check that an upstream engine has a URL") < first_change, tasks
    assert tasks.index("kioskd_daemon : Check that an upstream token goes with an upstream engine") < first_change
    assert (tasks.index("kioskd_daemon : Wait for kioskd to be ready")
            < tasks.index("kioskd_daemon : Remove the upstream token no longer used")
            < tasks.index("kioskd_display : Create the kiosk user")), tasks  # still in the block (before the screen)
    # The token is written before the settings that name it (a daemon restarted on them must find the file).
    assert tasks.index("kioskd_daemon : Write the upstream token") < tasks.index(
        "kioskd_daemon : Write /etc/kioskd/config.toml"), tasks
