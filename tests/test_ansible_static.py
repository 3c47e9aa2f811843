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


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
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


def _tasks(items: list[dict[str, object]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for item in items:
        out.append(item)
        for key in ("block", "rescue", "always"):
            if isinstance(item.get(key), list):
                out.extend(_tasks(item[key]))  # type: ignore[arg-type]
    return out
