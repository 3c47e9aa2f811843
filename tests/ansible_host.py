"""Helpers of the converge test (tests/test_ansible_converge.py): a Debian 12 root to provision, the
`community.general` collection for Ansible's `chroot` connection, an offline mirror served over HTTP, and the
real `ansible-playbook` run against that root.

Everything slow is built once and kept under .cache/converge/:

- `base/`: `debootstrap --variant=minbase bookworm` plus python3 and python3-venv (about 40 s to build);
  each test run provisions a fresh copy of it (`run/root`), so every run starts from a clean host;
- `collections/ansible_collections/community/general`: extracted from the `ansible` wheel of PyPI (the package
  that ships the collections; ansible-core alone has no `chroot` connection). Only that collection is kept.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("KIOSKD_CONVERGE_CACHE", ROOT / ".cache" / "converge"))
BASE_ROOT = CACHE / "base"
COLLECTIONS = CACHE / "collections"
# The `ansible` release (community.general 11.4.2) that goes with ansible-core 2.19 (the `test` extra's pin); only its
# community.general collection is used.
ANSIBLE_PACKAGE = "ansible==12.3.0"
SUITE = "bookworm"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The extras the playbook installs by default; every one needs a wheel for the target in the wheelhouse.
EXTRAS = ("llm", "voice", "systemd")
# Packages PyPI ships only as source: their wheels come from pip's own wheel cache (the local build of
# `pip install -e .[llm,voice,systemd]` by scripts/setup.sh), since the role installs with --only-binary=:all:.
SOURCE_ONLY = ("llama_cpp_python", "systemd_python", "srt")


class HostUnavailable(Exception):
    """This machine cannot build the test host (not root, no debootstrap, no mirror): the test skips."""


def _run(*args: str | Path, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def debian_mirror() -> str:
    """The first `URIs:` (deb822) or `deb` line of this machine's apt sources: the Debian archive it uses."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + sorted(
        Path("/etc/apt/sources.list.d").glob("*.list")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                uris = line.split()[1:]
            elif line.startswith("deb "):
                uris = [word for word in line.split()[1:] if not word.startswith("[")][:1]
            else:
                continue
            for uri in uris:
                if "security" not in uri and uri.startswith(("http://", "https://")):
                    return uri.rstrip("/")
    raise HostUnavailable("no Debian mirror in /etc/apt/sources.list(.d)")


def ensure_debootstrap() -> Path:
    found = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None)
    if found:
        return Path(found)
    if not shutil.which("apt-get"):
        raise HostUnavailable("debootstrap is missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run("apt-get", "update", "-q", env=env)
    _run("apt-get", "install", "-y", "-q", "debootstrap", env=env)
    return Path(shutil.which("debootstrap") or "/usr/sbin/debootstrap")


def in_root(root: Path, *args: str, timeout: float = 600) -> str:
    """Run a command inside `root` as root, with a clean environment."""
    return _run("chroot", root, "/usr/bin/env", "-i", f"PATH={CHROOT_PATH}", "DEBIAN_FRONTEND=noninteractive",
                "LC_ALL=C.UTF-8", *args, timeout=timeout)


def base_root() -> Path:
    """The cached Debian 12 minbase root with python3 and python3-venv (built on first use)."""
    marker = BASE_ROOT / ".kioskd-converge-base"
    if marker.is_file():
        return BASE_ROOT
    if os.geteuid() != 0:
        raise HostUnavailable("building a Debian root with debootstrap and chroot needs root")
    debootstrap = ensure_debootstrap()
    mirror = debian_mirror()
    building = CACHE / "base.tmp"
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    _run(debootstrap, "--variant=minbase", SUITE, building, mirror, timeout=1200)
    in_root(building, "apt-get", "update", "-q")
    in_root(building, "apt-get", "install", "-y", "-q", "--no-install-recommends", "python3", "python3-venv")
    in_root(building, "apt-get", "clean")
    (building / ".kioskd-converge-base").write_text(f"{SUITE} {mirror}\n")
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


def community_general() -> Path:
    """A collections path holding community.general, extracted from the `ansible` wheel (cached)."""
    collection = COLLECTIONS / "ansible_collections" / "community" / "general"
    if (collection / "MANIFEST.json").is_file():
        return COLLECTIONS
    dist = CACHE / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    if not list(dist.glob("ansible-*.whl")):
        _run(BIN / "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", dist, ANSIBLE_PACKAGE)
    wheel = sorted(dist.glob("ansible-*.whl"))[-1]
    prefix = "ansible_collections/community/general/"
    building = CACHE / "collections.tmp"
    shutil.rmtree(building, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(building, members=[name for name in archive.namelist() if name.startswith(prefix)])
    shutil.rmtree(COLLECTIONS, ignore_errors=True)
    building.rename(COLLECTIONS)
    return COLLECTIONS


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_cache_wheels() -> list[Path]:
    cache = Path(_run(BIN / "pip", "cache", "dir").strip()) / "wheels"
    found = []
    for name in SOURCE_ONLY:
        wheels = sorted(cache.rglob(f"{name}-*.whl"))
        if wheels:
            found.append(wheels[-1])
    return found


_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-")


def build_mirror(mirror: Path, model: Path) -> dict[str, object]:
    """The offline mirror of the README's table: wheels/ (kioskd and a cp311 wheelhouse of its dependencies)
    and models/<model>. Returns the kioskd_daemon variables that describe it (wheel, sha256, hashed lock)."""
    wheels = mirror / "wheels"
    models = mirror / "models"
    shutil.rmtree(mirror, ignore_errors=True)
    wheels.mkdir(parents=True)
    models.mkdir(parents=True)
    _run(BIN / "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT)
    (kioskd_wheel,) = wheels.glob("kioskd-*.whl")
    for wheel in _pip_cache_wheels():
        shutil.copy2(wheel, wheels / wheel.name)
    _run(BIN / "pip", "download", "-q", "--only-binary=:all:", "--find-links", wheels, "-d", wheels,
         f"{kioskd_wheel}[{','.join(EXTRAS)}]", timeout=900)
    try:
        os.link(model, models / model.name)
    except OSError:
        shutil.copy2(model, models / model.name)
    lock = []
    for wheel in sorted(wheels.glob("*.whl")):
        if wheel == kioskd_wheel:
            continue
        match = _WHEEL_NAME.match(wheel.name)
        assert match, wheel.name
        lock.append(f"{match['name'].replace('_', '-').lower()}=={match['version']} --hash=sha256:{sha256(wheel)}")
    return {
        "kioskd_daemon_wheel_sha256": sha256(kioskd_wheel),
        "kioskd_daemon_wheel_file": kioskd_wheel.name,
        "kioskd_daemon_requirements": lock,
    }


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


def write_inventory(path: Path, host: str, root: Path) -> Path:
    inventory = {"kiosks": {"hosts": {host: {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root),
        # Already root inside the chroot; a minbase root has no sudo.
        "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3",
    }}}}
    path.write_text(json.dumps(inventory, indent=2))  # JSON is YAML
    return path


def run_playbook(inventory: Path, extra_vars: Path, log: Path, timeout: float = 1800
                 ) -> subprocess.CompletedProcess[str]:
    """The real ansible-playbook of this venv on ansible/site.yml; its output also goes to `log`."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(community_general()),
        "ANSIBLE_LOCAL_TEMP": str(log.parent / "ansible-local"),
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"@{extra_vars}", "site.yml"],
        cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    log.write_text(f"$ {' '.join(result.args)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def recap(output: str, host: str) -> dict[str, int]:
    """The PLAY RECAP counters of `host` (ok, changed, unreachable, failed, skipped, rescued, ignored)."""
    lines = output.split("PLAY RECAP", 1)[-1].splitlines()
    for line in lines:
        name, _, counters = line.partition(":")
        if name.strip() == host:
            return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counters)}
    raise AssertionError(f"no PLAY RECAP line for {host} in:\n{output[-4000:]}")
