"""`kioskd serve` as a process with ENGINE=upstream (daemon/server.py's wiring): no local model at all, the
stand-in upstream on its own thread; the token file read again on SIGHUP; an upstream down at start."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tests.upstream_standin import MODEL, StandIn


class StandInThread:
    """The stand-in upstream served by an event loop on a background thread (the daemon is another process)."""

    def __init__(self) -> None:
        self.upstream = StandIn()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> StandInThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.upstream.start(), self._loop).result(5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.upstream.stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def upstream() -> Iterator[StandIn]:
    thread = StandInThread().start()
    yield thread.upstream
    thread.stop()


def ask(daemon: Daemon) -> dict[str, object]:
    body = json.dumps({"model": "any", "messages": [{"role": "user", "content": "Hi"}]}).encode()
    request = urllib.request.Request(f"{daemon.url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def eventually(check: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def upstream_env(url: str, token_file: Path | None = None) -> dict[str, str]:
    env = {"KIOSKD_ENGINE": "upstream", "KIOSKD_UPSTREAM_URL": url, "KIOSKD_UPSTREAM_FALLBACK": "false",
           "KIOSKD_UPSTREAM_HEALTH_INTERVAL": "0.2", "KIOSKD_MODEL": "/nonexistent/model.gguf"}
    if token_file is not None:
        env["KIOSKD_UPSTREAM_TOKEN_FILE"] = str(token_file)
    return env


def test_serve_answers_from_the_upstream_without_a_local_model_and_rereads_the_token_on_sighup(
        daemon_factory: Callable[..., Daemon], upstream: StandIn, tmp_path: Path) -> None:
    token_file = tmp_path / "upstream-token"
    token_file.write_text("first-token-abc\n")
    daemon = daemon_factory(env=upstream_env(upstream.url, token_file))
    status, body = daemon.get("/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["model"] == MODEL and ready["engine"]["serving"] == "upstream", ready
    answer = ask(daemon)
    assert answer["choices"][0]["message"]["content"] == "Hello from upstream."  # type: ignore[index]
    assert answer["model"] == MODEL
    token_file.write_text("second-token-def\n")
    daemon.proc.send_signal(signal.SIGHUP)
    eventually(lambda: "read the upstream token file" in daemon.log())
    ask(daemon)
    assert [s.headers["Authorization"] for s in upstream.seen] == ["Bearer first-token-abc",
                                                                   "Bearer second-token-def"]
    log = daemon.log()
    assert "first-token-abc" not in log and "second-token-def" not in log
    assert daemon.stop() == 0


def test_serve_with_the_upstream_down_and_no_fallback_says_upstream_unavailable(
        daemon_factory: Callable[..., Daemon], upstream: StandIn) -> None:
    upstream.health_status = 503
    daemon = daemon_factory(env=upstream_env(upstream.url), wait=False)

    def unavailable() -> bool:
        try:
            status, body = daemon.get("/readyz", timeout=1.0)
        except OSError:
            return False
        return status == 503 and json.loads(body)["status"] == "upstream_unavailable"

    eventually(unavailable)
    status, page = daemon.get("/")
    assert status == 200 and page
    upstream.health_status = 200
    eventually(lambda: daemon.get("/readyz")[0] == 200)
    assert daemon.stop() == 0


def test_serve_refuses_engine_upstream_without_a_url(daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(env={"KIOSKD_ENGINE": "upstream"}, wait=False)
    assert daemon.proc.wait(20) != 0
    assert "'upstream_url' is empty" in daemon.log()
