"""Security in one place, against the real daemon process bound to every interface and called through this
machine's own non-loopback address (so the daemon sees a caller from "another machine"): the API token, the
WebSocket Origin rule, open health and page, static files that cannot escape, and secrets kept out of the logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.kiosk_page import CONTENT_SECURITY_POLICY
from daemon.security import configured_token, is_loopback
from daemon.settings import describe, load_settings
from tests.conftest import Daemon, lan_address, start_daemon

TOKEN = "kioskd-test-token-" + base64.b32encode(os.urandom(10)).decode()  # unique: found only if it leaked
NEAR_MISS = TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B")
ALLOWED = "http://kiosk.example:8080"


LAN = lan_address()
pytestmark = pytest.mark.skipif(LAN is None, reason="this machine has no non-loopback IPv4 address to call from")


def lan_url(daemon: Daemon) -> str:
    return f"http://{LAN}:{daemon.port}"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def call(url: str, method: str = "GET", token: str | None = None, **kwargs: Any) -> tuple[int, Any, Any]:
    """Status, headers and JSON body (text when not JSON) of one request."""
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers, **kwargs) as resp:
        text = await resp.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return resp.status, resp.headers, body


def raw_get(address: str, port: int, target: str, headers: str = "") -> bytes:
    """The request line exactly as written: clients would normalise dots and escapes away."""
    with socket.create_connection((address, port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.fixture(scope="module")
def exposed(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Bound to all interfaces with a token (from the environment), one extra allowed origin, debug logging."""
    tmp = tmp_path_factory.mktemp("exposed")
    d = start_daemon(tmp, "--model", str(test_model), "--host", "0.0.0.0", "--log-level", "debug",
                     "--max-tokens", "4", "--allowed-origins", f"{ALLOWED}|https://screen.lan",
                     env={"KIOSKD_API_TOKEN": TOKEN})
    yield d
    assert d.stop() == 0, d.log()


UNAUTHORIZED = {"type": "authentication_error", "param": None, "code": "unauthorized"}


@pytest.mark.parametrize(("authorization", "reason"), [
    (None, "missing API token"),
    ("Bearer", "missing API token"),
    (f"Basic {TOKEN}", "missing API token"),
    ("Bearer wrong", "invalid API token"),
    (f"Bearer {NEAR_MISS}", "invalid API token"),
    (f"Bearer {TOKEN}x", "invalid API token"),
    (f"Bearer {TOKEN[:8]}", "invalid API token"),
], ids=["none", "empty", "basic", "wrong", "near-miss", "longer", "prefix"])  # ids: the token is random per run
@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                              ("GET", "/api/sessions"), ("DELETE", "/api/sessions/abc"),
                                              ("GET", "/v1/no-such-path")])
def test_other_machines_need_the_token(exposed: Daemon, authorization: str | None, reason: str, method: str,
                                       path: str) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, resp_headers, body = run(call(lan_url(exposed) + path, method, headers=headers,
                                          json={"messages": [{"role": "user", "content": "hi"}]}))
    assert status == 401, body
    assert resp_headers["WWW-Authenticate"] == "Bearer"
    assert body["error"] | UNAUTHORIZED == body["error"] and reason in body["error"]["message"]
    assert TOKEN not in json.dumps(body)


def test_the_right_token_opens_the_apis(exposed: Daemon) -> None:
    async def test() -> None:
        url = lan_url(exposed)
        status, _, body = await call(url + "/v1/models", token=TOKEN)
        assert status == 200 and body["data"][0]["object"] == "model"
        status, _, body = await call(url + "/v1/chat/completions", "POST", token=TOKEN, json={
            "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2})
        assert status == 200 and body["choices"][0]["message"]["role"] == "assistant", body
        status, _, body = await call(url + "/api/sessions", token=TOKEN)
        assert status == 200 and isinstance(body["sessions"], list)
        # The scheme is case-insensitive (RFC 7235); the token is not.
        assert (await call(url + "/v1/models", headers={"Authorization": f"bearer {TOKEN}"}))[0] == 200
        assert (await call(url + "/v1/models", token=TOKEN.lower()))[0] == 401

    run(test())


@pytest.mark.parametrize("target", ["/v1/models/", "/%761/models", "/v1/./models", "/v1/%2e/models",
                                    "/api/../v1/models", "//v1/models", "/api/sessions?limit=1"])
def test_no_spelling_of_an_api_path_skips_the_token(exposed: Daemon, target: str) -> None:
    assert LAN is not None
    answer = raw_get(LAN, exposed.port, target)
    assert int(answer.split(b" ", 2)[1]) in (401, 404), answer[:300]
    assert b'"sessions"' not in answer and b'"data"' not in answer


def test_callers_on_the_device_need_no_token(exposed: Daemon) -> None:
    async def test() -> None:
        status, _, body = await call(exposed.url + "/v1/models")  # 127.0.0.1: the kiosk on the device
        assert status == 200 and body["data"]
        # The history needs a screen's visit token (or the API token) even there: see tests/test_visits.py.
        status, _, body = await call(exposed.url + "/api/sessions")
        assert status == 403 and body["error"]["code"] == "visit_required", body
        assert (await call(exposed.url + "/api/sessions", token="wrong"))[0] == 403
        assert (await call(exposed.url + "/api/sessions", token=TOKEN))[0] == 200

    run(test())


def test_health_and_page_stay_open_to_other_machines(exposed: Daemon) -> None:
    async def test() -> None:
        url = lan_url(exposed)
        assert (await call(url + "/healthz"))[0] == 200
        status, _, body = await call(url + "/readyz")
        assert status == 200 and body["status"] == "ready"
        status, headers, page = await call(url + "/")
        assert status == 200 and "<script" in page
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY

    run(test())


@pytest.mark.parametrize("target", ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                                    "/assets/..%2f..%2fpyproject.toml", "/assets/../../pyproject.toml",
                                    "/assets/%2e%2e/%2e%2e/pyproject.toml", "/assets/%2fetc%2fpasswd"])
def test_static_files_cannot_escape_the_page_folder(exposed: Daemon, target: str) -> None:
    assert LAN is not None
    answer = raw_get(LAN, exposed.port, target)
    assert int(answer.split(b" ", 2)[1]) in (400, 403, 404), answer[:300]
    assert b"root:" not in answer and b"[project]" not in answer


async def handshake(url: str, origin: str | None) -> tuple[int, Any]:
    """Open /ws with this Origin: (101, the first frame) when accepted, else (status, the JSON body)."""
    headers = {} if origin is None else {"Origin": origin}
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url + "/ws", headers=headers) as ws:
                return 101, await ws.receive_json(timeout=10)
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
        upgrade = {**headers, "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
        async with http.get(url + "/ws", headers=upgrade) as resp:
            assert resp.status == status
            return status, await resp.json()


@pytest.mark.parametrize("origin", [None, "own", "own-lan", ALLOWED, "HTTPS://Screen.LAN"])
def test_the_websocket_accepts_its_own_allowed_and_no_origin(exposed: Daemon, origin: str | None) -> None:
    url = lan_url(exposed) if origin == "own-lan" else exposed.url
    if origin in ("own", "own-lan"):
        origin = url  # the page was served from the same host:port the browser now connects to
    status, frame = run(handshake(url, origin))
    assert status == 101 and frame["type"] == "hello"


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "http://kiosk.example:8081",
                                    "https://kiosk.example:8080", "null", "http://127.0.0.1.evil.example",
                                    "file://"])
def test_the_websocket_refuses_foreign_origins(exposed: Daemon, origin: str) -> None:
    if origin == "http://127.0.0.1:1":
        origin = f"http://127.0.0.1:{exposed.port + 1}"  # same host, another port: another origin
    status, body = run(handshake(exposed.url, origin))
    assert status == 403, body
    assert body["error"]["code"] == "forbidden_origin" and body["error"]["type"] == "permission_error"


def test_the_token_never_reaches_the_logs(exposed: Daemon) -> None:
    async def test() -> None:
        url = lan_url(exposed)
        assert (await call(url + "/v1/models", token=TOKEN))[0] == 200
        assert (await call(url + "/v1/models", token=NEAR_MISS))[0] == 401
        assert (await call(exposed.url + "/api/sessions", token=TOKEN))[0] == 200

    run(test())
    assert LAN is not None
    # Requests aiohttp's parser rejects: its error would quote the offending line, header and token included.
    for broken in (f"Authorization: Bearer {TOKEN}\x01\r\n", f"Authorization: Bearer {TOKEN}{'A' * 9000}\r\n",
                   f"Authorization : Bearer {TOKEN}\r\n", f"Authorization: Bearer {TOKEN}\r\nContent-Length: x\r\n"):
        assert raw_get(LAN, exposed.port, "/v1/models", broken).startswith(b"HTTP/1.0 400")
    log = exposed.log()
    assert "refused GET '/v1/models'" in log and "invalid API token" in log  # the refusals were logged...
    assert "LineTooLong (status 400; the request text is not logged" in log
    assert TOKEN not in log and NEAR_MISS not in log  # ...without the token, right or wrong
    dump = next(line for line in log.splitlines() if "daemon.app: settings: {" in line)
    assert "'api_token': '***'" in dump and "'allowed_origins': ('http://kiosk.example:8080'" in dump
    assert "/v1 and /api require the api_token" in log


def test_exposed_without_a_token_the_apis_refuse_other_machines(test_model: Path, tmp_path: Path) -> None:
    d = start_daemon(tmp_path, "--model", str(test_model), "--host", "0.0.0.0", env={"KIOSKD_API_TOKEN": ""})
    try:
        async def test() -> None:
            status, _, body = await call(lan_url(d) + "/v1/models", token="")
            assert status == 401 and "no api_token" in body["error"]["message"]
            assert (await call(lan_url(d) + "/api/sessions", token="anything"))[0] == 401
            assert (await call(d.url + "/v1/models"))[0] == 200  # the kiosk on the device keeps working
            assert (await call(lan_url(d) + "/healthz"))[0] == 200

        run(test())
        assert "not loopback) without an api_token" in d.log()
    finally:
        assert d.stop() == 0, d.log()


def test_the_token_can_come_from_a_file_and_is_never_in_the_settings_repr(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "api_token"
    path.write_text(f"  {TOKEN}  \nsecond line\n")
    settings = load_settings({"api_token_file": str(path)}, environ={})
    assert configured_token(settings) == TOKEN
    assert configured_token(load_settings({"api_token_file": str(path)}, environ={"KIOSKD_API_TOKEN": "x"})) == "x"
    from_env = load_settings({}, environ={"KIOSKD_API_TOKEN": TOKEN})
    assert TOKEN not in repr(from_env) and describe(from_env)["api_token"] == "***"
    path.write_bytes(b"\xff" + TOKEN.encode())
    with caplog.at_level(logging.ERROR, "daemon.security"):
        assert configured_token(settings) == ""  # unreadable: fail closed, and say so without the content
    assert "not UTF-8 text" in caplog.text and TOKEN not in caplog.text
    assert configured_token(load_settings({"api_token_file": str(tmp_path / "missing")}, environ={})) == ""


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False), ("fe80::1%eth0", False),
    ("", False), (None, False), ("127.0.0.1.evil.example", False),
])
def test_what_counts_as_loopback(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback
