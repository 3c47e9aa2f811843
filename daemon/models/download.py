"""Resumable, verified HTTP download (standard library only, plus tqdm for the progress bar).

The body goes to ``<dest>.part`` and is hashed while it is written; only a file whose size and
sha256 match is fsynced and atomically renamed to ``dest``. A corrupt or partial file never ends
up at ``dest``.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tqdm import tqdm

from daemon import __version__
from daemon.files import fsync_path
from daemon.models.catalogue import ProvisionError

if TYPE_CHECKING:
    from _hashlib import HASH

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_MAX_BACKOFF = 10.0
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-\d+/(?:\d+|\*)")
_UNREACHABLE = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)


# --- helpers shared with wheels.py -------------------------------------------------------------


def part_path(dest: Path) -> Path:
    """Where ``dest`` is written before it is verified: ``<dest>.part``."""
    return dest.with_name(dest.name + ".part")


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_good(path: Path, sha256: str, size: int | None) -> bool:
    """True if ``path`` is a file of the given size (if known) and sha256."""
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != size:
        return False
    return sha256_file(path) == sha256


def verify_part(
    part: Path, *, got_size: int, got_sha256: str, size: int | None, sha256: str, what: str
) -> None:
    """Raise ProvisionError (deleting ``part``) unless size and sha256 match what was expected."""
    if (size is None or got_size == size) and got_sha256 == sha256:
        return
    part.unlink(missing_ok=True)
    raise _Mismatch(
        f"{what}: verification failed: expected {size if size is not None else '?'} bytes "
        f"sha256 {sha256}, got {got_size} bytes sha256 {got_sha256}"
    )


def commit_part(part: Path, dest: Path) -> None:
    """fsync a verified ``part``, atomically rename it to ``dest`` and fsync the directory."""
    fsync_path(part)
    os.replace(part, dest)
    fsync_path(dest.parent)


def progress_bar(total: int | None, desc: str, *, enabled: bool, initial: int = 0) -> tqdm[NoReturn]:
    """A byte-counting tqdm bar on stderr (a no-op when ``enabled`` is false)."""
    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not enabled, dynamic_ncols=True,
    )


# --- the download itself -----------------------------------------------------------------------


class _Mismatch(ProvisionError):
    """The bytes arrived but are not the expected file."""


class _Transient(Exception):
    """A failure worth retrying, resuming from what is on disk."""

    def __init__(self, message: str, *, fail_fast: bool = False) -> None:
        super().__init__(message)
        # Nothing is listening / the host does not resolve: retrying only helps mid-transfer.
        self.fail_fast = fail_fast


@dataclass
class _Part:
    """The ``.part`` file and a running hash of the bytes it holds."""

    path: Path
    written: int = 0
    received: int = 0  # bytes received from the network during this call
    hasher: HASH = field(default_factory=hashlib.sha256)

    @classmethod
    def load(cls, path: Path) -> _Part:
        """Hash whatever is already on disk, so a resumed download is verified end to end."""
        part = cls(path)
        if path.is_file():
            with path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    part.hasher.update(chunk)
                    part.written += len(chunk)
        return part

    def reset(self) -> None:
        self.path.write_bytes(b"")
        self.written = 0
        self.hasher = hashlib.sha256()


def already_good(dest: Path, sha256: str, size: int | None, redo: str) -> bool:
    """True when `dest` already holds the verified file; otherwise clear the way for a new one."""
    if is_good(dest, sha256, size):
        log.info("%s is already present and verified", dest)
        return True
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        log.warning("%s does not match the expected sha256; %s it again", dest, redo)
        dest.unlink()
    return False


def download(
    url: str,
    dest: Path,
    *,
    sha256: str,
    size: int | None,
    progress: bool,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 0.5,
) -> Path:
    """Download ``url`` to ``dest``, resuming a ``.part`` file and verifying size and sha256.

    If ``dest`` already holds the right bytes, nothing is fetched. Transient failures are retried
    ``retries`` times in a row (any attempt that makes progress resets the count), waiting
    ``backoff`` seconds, doubling. Raises ProvisionError naming the URL on failure.
    """
    if already_good(dest, sha256, size, "downloading"):
        return dest
    part = part_path(dest)
    resumed = part.exists()
    try:
        try:
            _fetch_verified(url, part, sha256, size, progress, timeout, retries, backoff)
        except _Mismatch as exc:
            if not resumed:
                raise
            log.warning("%s; the old partial download was stale, starting again from zero", exc)
            _fetch_verified(url, part, sha256, size, progress, timeout, retries, backoff)
        commit_part(part, dest)
    except OSError as exc:
        raise ProvisionError(f"{url}: cannot write {part}: {exc}") from exc
    log.info("downloaded %s to %s", url, dest)
    return dest


def _fetch_verified(
    url: str, path: Path, sha256: str, size: int | None, progress: bool,
    timeout: float, retries: int, backoff: float,
) -> None:
    part = _Part.load(path)
    if part.written:
        log.info("resuming %s from byte %d", path.name, part.written)
    desc = path.name.removesuffix(".part")
    try:
        with progress_bar(size, desc, enabled=progress, initial=part.written) as bar:
            _fetch(url, part, size, bar, timeout=timeout, retries=retries, backoff=backoff)
    except _Mismatch:
        path.unlink(missing_ok=True)
        raise
    verify_part(path, got_size=part.written, got_sha256=part.hasher.hexdigest(), size=size,
                sha256=sha256, what=url)


def _fetch(
    url: str, part: _Part, size: int | None, bar: tqdm[NoReturn], *,
    timeout: float, retries: int, backoff: float,
) -> None:
    failures = 0
    while True:
        before = part.written
        try:
            _attempt(url, part, size, bar, timeout)
            return
        except _Transient as exc:
            if exc.fail_fast and not part.received:
                raise ProvisionError(f"{url}: {exc}") from exc
            failures = 0 if part.written > before else failures + 1
            if failures > retries:
                raise ProvisionError(f"{url}: giving up after {retries} retries: {exc}") from exc
            delay = min(backoff * 2 ** max(failures - 1, 0), _MAX_BACKOFF)
            retry = f"retry {failures}/{retries}" if failures else f"resuming from byte {part.written}"
            log.warning("%s: %s; %s in %.1f s", url, exc, retry, delay)
            time.sleep(delay)


def _attempt(url: str, part: _Part, size: int | None, bar: tqdm[NoReturn], timeout: float) -> None:
    """One request: append the body to the part file. Returns when the body is complete."""
    request = urllib.request.Request(
        url, headers={"User-Agent": f"kioskd/{__version__}", "Accept-Encoding": "identity"}
    )
    if part.written:
        request.add_header("Range", f"bytes={part.written}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        _http_error(url, exc.code, str(exc.reason), part, size)
        return  # 416 on a complete part: nothing more to fetch
    except urllib.error.URLError as exc:
        raise _Transient(f"cannot connect: {exc.reason}", fail_fast=_unreachable(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(f"connection failed: {exc!r}") from exc
    except ValueError as exc:
        raise ProvisionError(f"{url}: invalid URL: {exc}") from exc
    with response:
        _start_body(response, part, bar)
        _copy_body(url, response, part, size, bar)


def _unreachable(reason: object) -> bool:
    """Nothing listens there, the name does not resolve, or the certificate is bad."""
    if isinstance(reason, socket.gaierror | ssl.SSLCertVerificationError):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE


def _http_error(url: str, code: int, reason: str, part: _Part, size: int | None) -> None:
    if code == 416 and part.written:
        if size is None or part.written == size:
            return  # the part may well be complete: let verification decide
        stale = part.written
        part.reset()
        raise _Transient(f"HTTP 416 for a {stale}-byte partial file; starting again")
    if code >= 500 or code in (408, 429):
        raise _Transient(f"HTTP {code} {reason}")
    raise ProvisionError(f"{url}: HTTP {code} {reason}")


def _start_body(response: http.client.HTTPResponse, part: _Part, bar: tqdm[NoReturn]) -> None:
    """Decide whether the body appends to the part (206) or replaces it (200)."""
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == part.written:
            return
        part.reset()
        bar.reset(bar.total)
        raise _Transient(f"server resumed at the wrong offset ({response.headers.get('Content-Range')})")
    if response.status != 200:
        raise ProvisionError(f"{response.url}: unexpected HTTP {response.status}")
    if part.written:
        log.info("server ignored the Range request; restarting %s from zero", part.path.name)
        part.reset()
        bar.reset(bar.total)


def _copy_body(
    url: str, response: http.client.HTTPResponse, part: _Part, size: int | None, bar: tqdm[NoReturn]
) -> None:
    length = response.headers.get("Content-Length", "")
    expected_end = part.written + int(length) if length.isdigit() else size
    with part.path.open("ab") as fh:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(f"connection lost after {part.written} bytes: {exc!r}") from exc
            if not chunk:
                break
            fh.write(chunk)
            part.hasher.update(chunk)
            part.written += len(chunk)
            part.received += len(chunk)
            bar.update(len(chunk))
            if size is not None and part.written > size:
                raise _Mismatch(f"{url}: server sent more than the expected {size} bytes")
        fh.flush()
        os.fsync(fh.fileno())
    if expected_end is not None and part.written < expected_end:
        raise _Transient(f"connection closed after {part.written} of {expected_end} bytes")
