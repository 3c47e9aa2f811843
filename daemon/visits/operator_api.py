"""POST /api/operator/unlock and /api/operator/lock: the operator's PIN unlock on the kiosk screen."""

from __future__ import annotations

from aiohttp import web

from daemon.appkeys import OPERATOR
from daemon.openai_compat.routes import read_json
from daemon.openai_compat.schema import ApiError
from daemon.visits.operator import OperatorRefusal

OPERATOR_HEADER = "X-Kioskd-Operator"
MAX_PIN_CHARS = 64

_STATUS = {"operator_unlock_disabled": (404, "not_found_error"), "wrong_pin": (403, "permission_error"),
           "locked_out": (429, "rate_limit_error")}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/operator/unlock", unlock)
    router.add_post("/api/operator/lock", lock)


def _pin(body: object) -> str:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    for key in body:
        if key != "pin":
            raise ApiError(400, f"unknown field {key!r:.40}; only 'pin' is accepted", param=key)
    pin = body.get("pin")
    if not isinstance(pin, str) or not 0 < len(pin) <= MAX_PIN_CHARS:
        raise ApiError(400, f"'pin' must be a string of 1 to {MAX_PIN_CHARS} characters", param="pin")
    return pin


def _refused(refusal: OperatorRefusal) -> web.Response:
    status, kind = _STATUS[refusal.code]
    body = ApiError(status, str(refusal), code=refusal.code, kind=kind).body()
    headers = {}
    if refusal.attempts_left is not None:
        body["error"]["attempts_left"] = refusal.attempts_left
    if refusal.retry_after is not None:
        body["error"]["retry_after"] = refusal.retry_after
        headers["Retry-After"] = str(refusal.retry_after)
    return web.json_response(body, status=status, headers=headers)


async def unlock(request: web.Request) -> web.Response:
    pin = _pin(await read_json(request))
    try:
        unlocked = await request.app[OPERATOR].unlock(pin)
    except OperatorRefusal as refusal:
        return _refused(refusal)
    return web.json_response({"operator": unlocked.token, "expires_in": unlocked.expires_in})


async def lock(request: web.Request) -> web.Response:
    """Idempotent: afterwards the token does not work, whether it did before or not (expired, already locked)."""
    request.app[OPERATOR].lock(request.headers.get(OPERATOR_HEADER))
    return web.Response(status=204)
