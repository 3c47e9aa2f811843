"""daemon.models.download against a real HTTP server on 127.0.0.1 with switchable faults."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.models.download import download, part_path
from daemon.models.pull import ProvisionError

PAYLOAD = os.urandom(3 * 1024 * 1024 + 4321)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
K = 1_234_567  # where the faulty server cuts the body


@dataclass
class Served:
    """What the server serves, the faults it injects, and the Range header of every request."""

    payload: bytes
    faults: list[str] = field(default_factory=list)  # one per request, then `always`
    always: str = "ok"  # "ok", "ignore-range", an HTTP status, or "cut:N" / "reset:N" / "stall:N"
    requests: list[str | None] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, range_header: str | None) -> str:
        with self.lock:
            self.requests.append(range_header)
            return self.faults.pop(0) if self.faults else self.always


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        served = self.server.served
        fault = served.next_fault(self.headers.get("Range"))
        if fault.isdigit():
            self.send_error(int(fault))
            return
        body = self._headers_for(served.payload, fault)
        if body is None:
            return
        kind, _, count = fault.partition(":")
        if kind not in ("cut", "reset", "stall"):
            self.wfile.write(body)
            return
        self.wfile.write(body[: int(count)])
        self.wfile.flush()
        if kind == "stall":
            time.sleep(1.0)
        if kind == "reset":  # close with RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _headers_for(self, payload: bytes, fault: str) -> bytes | None:
        """Send status and headers (honouring Range unless told not to); return the body."""
        header = self.headers.get("Range")
        start = 0
        if header and fault != "ignore-range":
            start = int(header.removeprefix("bytes=").rstrip("-"))
            if start >= len(payload):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(payload)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(payload) - start))
        self.end_headers()
        return payload[start:]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, served: Served) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.served = served


@pytest.fixture
def server() -> Iterator[Served]:
    served = Served(PAYLOAD)
    httpd = _Server(served)
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}/model.bin"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, dest: Path, **kwargs: Any) -> Path:
    options: dict[str, Any] = {"sha256": SHA, "size": len(PAYLOAD), "progress": False,
                               "timeout": 5.0, "backoff": 0.01}
    options.update(kwargs)
    return download(url, dest, **options)


def assert_good(dest: Path) -> None:
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()


def test_plain_download(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "model.bin"
    assert fetch(server.url, dest) == dest
    assert_good(dest)
    assert server.requests == [None]


def test_resumes_after_connection_cut(server: Served, tmp_path: Path) -> None:
    server.faults = [f"cut:{K}"]
    dest = tmp_path / "model.bin"
    fetch(server.url, dest)
    assert_good(dest)
    assert server.requests == [None, f"bytes={K}-"]


@pytest.mark.parametrize("fault", ["reset", "stall"])
def test_recovers_from_reset_and_timeout(server: Served, tmp_path: Path, fault: str) -> None:
    server.faults = [f"{fault}:{K}"]
    dest = tmp_path / "model.bin"
    fetch(server.url, dest, timeout=0.3)
    assert_good(dest)
    assert len(server.requests) == 2
    assert server.requests[1] is None or server.requests[1].startswith("bytes=")


def test_resumes_existing_part(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(PAYLOAD[:K])
    fetch(server.url, dest, progress=True)
    assert_good(dest)
    assert server.requests == [f"bytes={K}-"]


def test_complete_part_gets_416_and_is_verified(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(PAYLOAD)
    fetch(server.url, dest)
    assert_good(dest)
    assert server.requests == [f"bytes={len(PAYLOAD)}-"]


def test_server_ignoring_range_restarts_cleanly(server: Served, tmp_path: Path) -> None:
    server.always = "ignore-range"
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(PAYLOAD[:K])
    fetch(server.url, dest)
    assert_good(dest)
    assert server.requests == [f"bytes={K}-"]


def test_stale_part_is_discarded_and_fetched_again(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(os.urandom(K))  # e.g. left over from another version of the file
    fetch(server.url, dest)
    assert_good(dest)
    assert server.requests == [f"bytes={K}-", None]


@pytest.mark.parametrize(
    ("sha256", "size"),
    [("0" * 64, len(PAYLOAD)), (SHA, len(PAYLOAD) + 1), (SHA, len(PAYLOAD) - 10)],
    ids=["wrong-sha", "short", "too-long"],
)
def test_mismatch_fails_and_leaves_nothing(server: Served, tmp_path: Path, sha256: str, size: int) -> None:
    dest = tmp_path / "model.bin"
    with pytest.raises(ProvisionError, match="expected") as info:
        fetch(server.url, dest, sha256=sha256, size=size, retries=1)
    assert server.url in str(info.value)
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_persistent_500_gives_up_after_retries(server: Served, tmp_path: Path) -> None:
    server.always = "500"
    dest = tmp_path / "model.bin"
    with pytest.raises(ProvisionError, match="500"):
        fetch(server.url, dest, retries=2)
    assert len(server.requests) == 3
    assert not dest.exists()


def test_500_once_then_ok(server: Served, tmp_path: Path) -> None:
    server.faults = ["500"]
    dest = tmp_path / "model.bin"
    fetch(server.url, dest)
    assert_good(dest)
    assert server.requests == [None, None]


def test_404_fails_at_once(server: Served, tmp_path: Path) -> None:
    server.always = "404"
    dest = tmp_path / "model.bin"
    with pytest.raises(ProvisionError, match="404") as info:
        fetch(server.url, dest, retries=5)
    assert server.url in str(info.value)
    assert server.requests == [None]
    assert not dest.exists()


def test_good_dest_is_not_downloaded_again(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.write_bytes(PAYLOAD)
    fetch(server.url, dest)
    assert server.requests == []


def test_corrupt_dest_is_replaced(server: Served, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.write_bytes(os.urandom(len(PAYLOAD)))
    fetch(server.url, dest)
    assert_good(dest)
    assert server.requests == [None]


def test_connection_refused_fails_quickly(tmp_path: Path) -> None:
    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/model.bin"
        dest = tmp_path / "model.bin"
        started = time.monotonic()
        with pytest.raises(ProvisionError) as info:
            fetch(url, dest, backoff=0.5)  # the default back-off: refusal must not be retried
    assert time.monotonic() - started < 2.0
    assert url in str(info.value)
    assert not dest.exists()
