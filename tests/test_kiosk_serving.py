"""The daemon serves the built kiosk page: the right files, a strict CSP on every answer, nothing outside the
page's folder, and a clear answer when the page was never built. Real app, real sockets; a tiny page on disk."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest

from daemon.kiosk_page import CONTENT_SECURITY_POLICY
from tests.fakes import ScriptedEngine, serve


@pytest.fixture
def page(tmp_path: Path) -> Path:
    root = tmp_path / "page"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text('<!doctype html><script type="module" src="/assets/app-1a2b.js"></script>')
    (root / "assets" / "app-1a2b.js").write_text("console.log('kiosk')")
    (root / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("not for visitors")
    return root


async def fetch(url: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.text()


def raw_get(port: int, target: str) -> bytes:
    """Send the request line exactly as written (clients would normalise the dots away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_page_and_assets_are_served_with_a_strict_policy(page: Path) -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), kiosk_dir=str(page)) as served:
            status, headers, body = await fetch(served.url + "/")
            assert status == 200 and "app-1a2b.js" in body
            assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
            assert headers["Cache-Control"] == "no-cache" and headers["X-Content-Type-Options"] == "nosniff"
            status, headers, body = await fetch(served.url + "/assets/app-1a2b.js")
            assert status == 200 and "kiosk" in body and "immutable" in headers["Cache-Control"]
            assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert (await fetch(served.url + "/favicon.svg"))[0] == 200
            status, headers, _ = await fetch(served.url + "/healthz")
            assert status == 200 and headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY

    asyncio.run(test())


@pytest.mark.parametrize("target", [
    "/assets/../secret.txt",
    "/assets/../../secret.txt",
    "/assets/%2e%2e/%2e%2e/secret.txt",
    "/assets/..%2f..%2fsecret.txt",
    "/assets//etc/passwd",
    "/assets/%2fetc%2fpasswd",
    "/../secret.txt",
])
def test_static_files_cannot_escape_the_page_folder(page: Path, target: str) -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), kiosk_dir=str(page)) as served:
            answer = await asyncio.to_thread(raw_get, served.port, target)
            status = int(answer.split(b" ", 2)[1])
            assert status in (400, 403, 404), answer[:200]
            assert b"not for visitors" not in answer and b"root:" not in answer

    asyncio.run(test())


def test_a_page_that_was_never_built_gets_a_clear_answer_and_chat_still_works(tmp_path: Path) -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), kiosk_dir=str(tmp_path / "missing")) as served:
            status, _, body = await fetch(served.url + "/")
            assert status == 503 and "npm ci && npm run build" in body
            assert (await fetch(served.url + "/readyz"))[0] == 200

    asyncio.run(test())
