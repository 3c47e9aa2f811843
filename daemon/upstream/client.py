"""The HTTP side of an OpenAI-compatible upstream: one aiohttp session, the bearer token and the health probe."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp

from daemon.settings import Settings
from daemon.upstream.errors import UpstreamUnreachable, refusal

_LOGGER = logging.getLogger(__name__)


def read_token(path: Path | None) -> str:
    """The first line of the token file ("" without one). The token itself is never logged."""
    if path is None:
        return ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        _LOGGER.error("cannot read upstream_token_file %s (%s); asking the upstream without a token",
                      path, type(exc).__name__)
        return ""
    return lines[0].strip() if lines else ""


async def error_message(response: aiohttp.ClientResponse) -> str:
    """What an upstream says about its refusal: OpenAI's error.message, else the start of its body."""
    try:
        text = (await response.text(errors="replace"))[:2000]
    except (TimeoutError, aiohttp.ClientError):
        return response.reason or ""
    try:
        body = json.loads(text)
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message
    except json.JSONDecodeError:
        pass
    return text.strip()[:300] or (response.reason or "")


class UpstreamClient:
    """Talks to `settings.upstream_url`. The session is made on first use (inside the event loop) and closed
    by `close()`."""

    def __init__(self, settings: Settings) -> None:
        self._base = settings.upstream_url.rstrip("/")
        self._connect_timeout = settings.upstream_connect_timeout
        self._token = read_token(settings.upstream_token_file)
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return self._base

    def reload_token(self, settings: Settings) -> None:
        """SIGHUP: read the token file again (a rotated token applies to the next question)."""
        self._token = read_token(settings.upstream_token_file)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No total timeout: an answer may stream for minutes; the engine times the first token and stalls.
            timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                            sock_connect=self._connect_timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def post_chat(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST /chat/completions; returns the open streaming response (the caller closes it), or raises a
        typed failure: unreachable, refused (down) or rejected (a bad question)."""
        try:
            response = await self._session_now().post(f"{self._base}/chat/completions", json=body,
                                                       headers=self._headers())
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError) as exc:
            reason = exc or type(exc).__name__
            raise UpstreamUnreachable(f"cannot reach the upstream at {self._base}: {reason}") from None
        if response.status != 200:
            try:
                message = await error_message(response)
            finally:
                response.close()
            raise refusal(response.status, message)
        return response

    async def models(self, wait: float) -> list[str]:
        """The model ids the upstream's GET /models lists; raises UpstreamFailure when it does not answer."""
        try:
            async with self._session_now().get(f"{self._base}/models", headers=self._headers(),
                                               timeout=aiohttp.ClientTimeout(total=wait)) as response:
                if response.status != 200:
                    raise refusal(response.status, await error_message(response))
                body = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
            raise UpstreamUnreachable(f"the upstream at {self._base} does not answer its health check: "
                                      f"{exc or type(exc).__name__}") from None
        data = body.get("data") if isinstance(body, dict) else None
        return [str(m["id"]) for m in data or () if isinstance(m, dict) and "id" in m]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
