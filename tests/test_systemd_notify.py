"""The daemon as systemd sees it: a real daemon process with NOTIFY_SOCKET pointing at a datagram socket this
test owns (systemd-python does the sending), and the SmolLM2 test model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import start_daemon


@dataclass
class NotifySocket:
    path: Path
    sock: socket.socket
    messages: list[tuple[float, str]] = field(default_factory=list)

    def read(self, until: float) -> None:
        """Collect datagrams until the monotonic time `until`."""
        while (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, line: str, seconds: float = 30.0) -> float:
        deadline = time.monotonic() + seconds
        while True:
            for at, message in self.messages:
                if line in message.split("\n"):
                    return at
            if time.monotonic() > deadline:
                raise AssertionError(f"no {line!r} in {seconds} s; got {self.lines()}")
            self.read(min(deadline, time.monotonic() + 0.1))

    def lines(self) -> list[str]:
        return [line for _, message in self.messages for line in message.split("\n")]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield NotifySocket(path, sock)
    sock.close()


def under_systemd(notify: NotifySocket, watchdog_s: float | None = None) -> dict[str, str]:
    env = {"NOTIFY_SOCKET": str(notify.path), "KIOSKD_VOICE": "false"}
    if watchdog_s is not None:
        env["WATCHDOG_USEC"] = str(int(watchdog_s * 1_000_000))
    return env


def test_ready_only_once_serving_then_status_watchdog_and_stopping(
        notify_socket: NotifySocket, test_model: Path, tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, "--model", str(test_model), "--fault-load-delay", "1",
                          env=under_systemd(notify_socket, watchdog_s=0.4), wait=False)
    try:
        notify_socket.wait_for(f"STATUS=loading model {test_model.name}")
        assert daemon.get("/readyz", timeout=2)[0] == 503
        notify_socket.wait_for("READY=1")
        assert daemon.get("/readyz", timeout=2)[0] == 200  # READY=1 came only once the daemon was ready.
        ready_at = notify_socket.wait_for("READY=1")
        notify_socket.read(time.monotonic() + 1.5)
        pings = [at for at, message in notify_socket.messages if message == "WATCHDOG=1" and at > ready_at]
        assert len(pings) >= 5, notify_socket.lines()  # every 0.2 s: half the watchdog interval
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
        notify_socket.wait_for("STOPPING=1", 5)
    finally:
        daemon.stop(signal.SIGKILL)


def test_a_hung_engine_stops_the_watchdog_pings(notify_socket: NotifySocket, test_model: Path,
                                                tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, "--model", str(test_model), "--fault-engine-hang", "30",
                          "--watchdog-stall", "1", env=under_systemd(notify_socket, watchdog_s=0.4))

    async def ask_and_watch() -> list[float]:
        async with aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/ws") as ws:
            await ws.send_str(json.dumps({"type": "chat", "text": "Hello there", "session": None}))
            frame: dict[str, object] = {}
            while frame.get("type") != "session":
                frame = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
            # The model thread is now stuck; the page keeps waiting for its answer.
            await asyncio.to_thread(notify_socket.read, time.monotonic() + 1.5)
            hung_at = time.monotonic()
            await asyncio.to_thread(notify_socket.read, time.monotonic() + 2.0)
            return [at for at, message in notify_socket.messages if message == "WATCHDOG=1" and at > hung_at]

    try:
        notify_socket.wait_for("READY=1")
        late = asyncio.run(ask_and_watch())
        assert late == [], "the watchdog kept pinging while the engine was stuck"
        assert any(line.startswith("STATUS=stuck") for line in notify_socket.lines())
        assert daemon.get("/healthz")[0] == 200  # The event loop itself is fine: only the engine is stuck.
    finally:
        daemon.stop(signal.SIGKILL)


def test_sigterm_mid_answer_stores_it_and_exits_0(notify_socket: NotifySocket, test_model: Path,
                                                  tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, "--model", str(test_model), "--max-tokens", "400",
                          env=under_systemd(notify_socket))

    async def ask_and_stop() -> str:
        async with aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/ws") as ws:
            await ws.send_str(json.dumps({"type": "chat", "text": "Tell me a long story.", "session": None}))
            session, tokens = "", 0
            while tokens < 5:
                frame = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                session = frame.get("session", session)
                tokens += frame["type"] == "token"
            os.kill(daemon.proc.pid, signal.SIGTERM)
            return session

    session = asyncio.run(ask_and_stop())
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    notify_socket.wait_for("STOPPING=1", 5)
    with sqlite3.connect(tmp_path / "state" / "history.db") as db:
        rows = db.execute("SELECT role, status, length(content) FROM turns WHERE session_id = ? ORDER BY seq",
                          (session,)).fetchall()
    assert [(role, status) for role, status, _ in rows] == [("user", "complete"), ("assistant", "interrupted")]
    assert rows[-1][2] > 0


def test_sighup_swaps_the_model_and_applies_settings_without_dropping_the_socket(
        notify_socket: NotifySocket, test_model: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-model.gguf"
    other.symlink_to(test_model)  # Another file name: another model as far as the daemon can tell.
    config = tmp_path / "config.toml"
    config.write_text(f'model = "{test_model}"\nmax_tokens = 40\n')
    daemon = start_daemon(tmp_path, "--config", str(config), env=under_systemd(notify_socket))

    def model_id() -> str:
        return str(json.loads(daemon.get("/v1/models")[1])["data"][0]["id"])

    async def reload_while_connected() -> str:
        async with aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/ws") as ws:
            await ws.receive()  # hello
            config.write_text(f'model = "{other}"\nmax_tokens = 20\nqueue_size = 3\n')
            daemon.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(notify_socket.wait_for, "RELOADING=1", 10)
            await asyncio.to_thread(notify_socket.wait_for,
                                    "STATUS=reloaded: applied max_tokens, model; restart to apply queue_size", 30)
            await ws.send_str(json.dumps({"type": "chat", "text": "Hello", "session": None}))
            while (frame := json.loads((await asyncio.wait_for(ws.receive(), 30)).data))["type"] != "done":
                assert frame["type"] in ("session", "token"), frame
            return str(frame["usage"]["completion_tokens"])

    try:
        notify_socket.wait_for("READY=1")
        assert model_id() == test_model.stem
        assert int(asyncio.run(reload_while_connected())) <= 20  # The same socket, the new max_tokens.
        assert model_id() == "other-model"
        assert daemon.get("/readyz")[0] == 200
        config.write_text(f'model = "{tmp_path / "missing.gguf"}"\n')
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any("reload failed" in line for line in notify_socket.lines()):
            assert time.monotonic() < deadline, notify_socket.lines()
            notify_socket.read(time.monotonic() + 0.1)
        assert model_id() == "other-model" and daemon.get("/readyz")[0] == 200  # Still the working model.
    finally:
        daemon.stop(signal.SIGKILL)


@pytest.mark.parametrize("content", [None, b"GGUF" + b"\x00garbage" * 1000], ids=["missing", "corrupt"])
def test_a_missing_or_corrupt_model_is_a_clear_status_and_a_failed_exit(
        notify_socket: NotifySocket, tmp_path: Path, content: bytes | None) -> None:
    model = tmp_path / "broken.gguf"
    if content is not None:
        model.write_bytes(content)
    daemon = start_daemon(tmp_path, "--model", str(model), env=under_systemd(notify_socket), wait=False)
    assert daemon.proc.wait(60) == 1
    notify_socket.read(time.monotonic() + 0.5)
    failed = [line for line in notify_socket.lines() if line.startswith("STATUS=failed")]
    assert failed and str(model) in failed[0], notify_socket.lines()
    assert "READY=1" not in notify_socket.lines()
    assert str(model) in daemon.log()
