"""Under systemd the daemon logs to the journal with structured fields; elsewhere, plain lines on stderr.

The journal's native socket is a fixed path (/run/systemd/journal/socket). With no journald on this machine the
test binds that path itself, runs the real daemon as systemd would (JOURNAL_STREAM set) and reads the entries
that systemd-python's JournalHandler sends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import start_daemon
from tests.wsclient import ask

JOURNAL = Path("/run/systemd/journal/socket")


def parse_entry(data: bytes) -> dict[str, str]:
    """The journal's native protocol: KEY=value lines, or KEY, newline, 64-bit length, raw value, newline."""
    fields, pos = {}, 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            pos = end + 1
        else:
            (size,) = struct.unpack("<Q", data[end + 1:end + 9])
            key, value = line, data[end + 9:end + 9 + size]
            pos = end + 9 + size + 1
        fields[key.decode()] = value.decode(errors="replace")
    return fields


@pytest.fixture
def journal_socket() -> Iterator[socket.socket]:
    if JOURNAL.exists():
        pytest.skip("a journald is running here; not replacing its socket")
    created = not JOURNAL.parent.exists()
    JOURNAL.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(JOURNAL))
    sock.settimeout(0.2)
    try:
        yield sock
    finally:
        sock.close()
        JOURNAL.unlink(missing_ok=True)
        if created:
            os.rmdir(JOURNAL.parent)


def drain(sock: socket.socket) -> list[dict[str, str]]:
    entries = []
    while True:
        try:
            entries.append(parse_entry(sock.recv(1 << 20)))
        except TimeoutError:
            return entries


def test_answers_are_logged_with_session_and_timing_fields(journal_socket: socket.socket, test_model: Path,
                                                           tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, "--model", str(test_model), "--max-tokens", "8",
                          env={"JOURNAL_STREAM": "8:12345"})
    try:
        async def chat() -> str:
            async with aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/ws") as ws:
                answer = await ask(ws, "Hello")
                assert answer.done is not None and answer.session
                return answer.session

        session = asyncio.run(chat())
        entries = drain(journal_socket)
    finally:
        daemon.stop(signal.SIGTERM)
    assert any(e.get("MESSAGE", "").startswith("ready: model") for e in entries), entries[:3]
    answered = [e for e in entries if e.get("SESSION_ID") == session]
    assert answered, [e.get("MESSAGE") for e in entries]
    fields = answered[-1]
    assert fields["SYSLOG_IDENTIFIER"] == "kioskd" and fields["PRIORITY"] == "6"
    assert float(fields["TTFT_MS"]) > 0 and float(fields["TOKENS_PER_S"]) >= 0
    assert fields["FINISH_REASON"] in ("stop", "length") and int(fields["COMPLETION_TOKENS"]) > 0
    assert "answered in session" not in daemon.log()  # the journal got it, not stderr


def test_without_systemd_logs_are_plain_lines_on_stderr(test_model: Path, tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, "--model", str(test_model), "--max-tokens", "8")
    try:
        async def chat() -> None:
            async with aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/ws") as ws:
                await ask(ws, "Hello")

        asyncio.run(chat())
    finally:
        daemon.stop(signal.SIGTERM)
    log = daemon.log()
    assert " INFO daemon.conversation: answered in session " in log and "tokens/s" in log
    assert not any(line.startswith("{") for line in log.splitlines()), json.dumps(log[:200])
