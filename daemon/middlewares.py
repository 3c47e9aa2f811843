"""One place that turns failures into JSON error answers with stable codes."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from daemon.appkeys import METRICS, SETTINGS
from daemon.messages import Busy, EngineError, ModelNotReady, PromptTooLong, ShuttingDown
from daemon.openai_compat.schema import ApiError

_LOGGER = logging.getLogger(__name__)


def _engine_error(exc: EngineError, retry_after: int) -> tuple[ApiError, dict[str, str]]:
    if isinstance(exc, Busy):
        return ApiError(503, str(exc), code=exc.code, kind="server_busy"), {"Retry-After": str(retry_after)}
    if isinstance(exc, ShuttingDown):
        return ApiError(503, str(exc), code=exc.code, kind="server_unavailable"), {"Retry-After": str(retry_after)}
    if isinstance(exc, ModelNotReady):
        return ApiError(503, str(exc), code=exc.code, kind="server_loading"), {"Retry-After": str(retry_after)}
    if isinstance(exc, PromptTooLong):
        return ApiError(400, str(exc), code=exc.code, param="messages"), {}
    if exc.code == "upstream_refused":  # The upstream server found the question itself wrong (its 400/422).
        return ApiError(400, str(exc), code=exc.code), {}
    return ApiError(500, str(exc), code=exc.code, kind="server_error"), {}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    headers: dict[str, str] = {}
    try:
        return await handler(request)
    except ApiError as exc:
        error = exc
    except EngineError as exc:
        error, headers = _engine_error(exc, request.app[SETTINGS].current.retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = ApiError(exc.status, exc.reason, code=exc.reason.lower().replace(" ", "_"))
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        _LOGGER.exception("unhandled error in %s %s", request.method, request.path)
        error = ApiError(500, "internal error", code="internal_error", kind="server_error")
    request.app[METRICS].error(error.code, str(error), callers_fault=error.status < 500)
    return web.json_response(error.body(), status=error.status, headers=headers)
