"""Serves the built kiosk page at `/` with a strict Content-Security-Policy on every answer.

The page is untrusted-content-heavy (model output is rendered as Markdown), so the policy allows only this
origin's own scripts and styles and no inline script: even markup that slipped past the page's sanitizer
could not run or load anything from elsewhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

import kiosk
from daemon.settings import Settings

_LOGGER = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_IMMUTABLE = "public, max-age=31536000, immutable"  # Vite puts a content hash in every asset's name.


def page_dir(settings: Settings) -> Path:
    return settings.kiosk_dir or kiosk.DIST


def add_routes(app: web.Application, settings: Settings) -> None:
    """`/` and `/assets/...` from the built page; a clear 503 page when it was never built."""
    root = page_dir(settings)
    index = root / "index.html"
    if not index.is_file():
        _LOGGER.warning("kiosk page not found at %s: run `npm ci && npm run build` in kiosk/ "
                        "(scripts/setup.sh does); the chat API keeps working", root)
        app.router.add_get("/", _not_built(root))
        return
    app.router.add_get("/", _file(index))
    if (root / "assets").is_dir():
        app.router.add_static("/assets", root / "assets", follow_symlinks=False)
    for extra in sorted(p for p in root.iterdir() if p.is_file() and p.name != "index.html"):
        app.router.add_get(f"/{extra.name}", _file(extra))  # favicon, manifest: top-level files only


def _file(path: Path) -> Handler:
    async def serve_file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})
    return serve_file


def _not_built(root: Path) -> Handler:
    async def not_built(request: web.Request) -> web.Response:
        return web.Response(status=503, content_type="text/plain", text=(
            f"The kiosk page is not built (no {root / 'index.html'}).\n"
            "Run `npm ci && npm run build` in the kiosk/ folder, or `make run`, then reload.\n"))
    return not_built


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, page or API, carries the same protective headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/assets/") and response.status == 200:
        response.headers["Cache-Control"] = _IMMUTABLE
