"""Who may use what: a bearer token for the APIs from other machines, same-origin only for the kiosk WebSocket.

By default the daemon listens on loopback. Opened to a network (`host` not loopback), anyone on it could read
the visitors' conversations (/api/sessions) and use the model (/v1), so callers from other machines must send
`Authorization: Bearer <api_token>`. Callers on the device itself (the kiosk page in its browser, health
probes) need no token: they are the appliance. When no token is configured the APIs stay closed to other
machines (fail closed) instead of the daemon refusing to start: the device's own kiosk keeps serving visitors
after a configuration mistake, and the start-up warning says what to set.

The WebSocket carries no token (the kiosk page cannot keep a secret), so it is guarded against other web sites
instead: browsers send `Origin` with every WebSocket handshake, and a page from any origin but the daemon's own
(or one in `allowed_origins`) is refused before the upgrade (cross-site WebSocket hijacking). Clients that are
not browsers send no Origin and are let through.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from daemon.appkeys import METRICS
from daemon.openai_compat.schema import ApiError
from daemon.settings import Settings

_LOGGER = logging.getLogger(__name__)

API_PREFIXES = ("/v1/", "/api/")
API_PATHS = ("/v1", "/api", "/metrics", "/status")
"""Guarded like the APIs: the prefixes' roots, and the fleet's monitoring (daemon.metrics)."""
WS_PATH = "/ws"
MIN_TOKEN_CHARS = 16
Origin = tuple[str, str, int | None]  # scheme, host, port: what makes two origins the same
_TOKEN_OK = web.RequestKey("kioskd_api_token_ok", bool)


def has_api_token(request: web.Request) -> bool:
    """The request carried the right API token (from any address); the guard decides it once per request."""
    return bool(request.get(_TOKEN_OK, False))


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and "localhost"; False for anything unparsable."""
    if not address:
        return False
    if address.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket sees local IPv4 callers as ::ffff:127.0.0.1
    return ip.is_loopback


def configured_token(settings: Settings) -> str:
    """`api_token`, else the first line of `api_token_file`; "" when neither gives one."""
    if settings.api_token or settings.api_token_file is None:
        return settings.api_token
    try:
        lines = settings.api_token_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        # Only the error's kind and reason: a decode error's text quotes bytes of the secret file.
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        _LOGGER.error("cannot read api_token_file %s (%s): %s; callers from other machines are refused",
                      settings.api_token_file, type(exc).__name__, reason)
        return ""
    return lines[0].strip() if lines else ""


def origin_of(text: str) -> Origin | None:
    """The (scheme, host, port) of a serialized origin such as "http://kiosk.lan:8080"; None if it is not one
    (including the literal "null" that sandboxed pages and file:// send)."""
    try:
        url = URL(text.strip())
    except ValueError:
        return None
    if not url.scheme or not url.host or url.user or url.path not in ("", "/") or url.query_string:
        return None
    return url.scheme.lower(), url.host.lower().rstrip("."), url.port


@dataclass(frozen=True)
class Policy:
    token: bytes
    """The API token as bytes for hmac.compare_digest; empty: none configured."""
    allowed_origins: frozenset[Origin]

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        origins = set()
        for text in settings.allowed_origins:
            if (origin := origin_of(text)) is None:
                _LOGGER.warning("allowed_origins: %r is not an origin like 'http://host:port'; ignored", text)
            else:
                origins.add(origin)
        return cls(_bytes(configured_token(settings)), frozenset(origins))

    def token_refusal(self, authorization: str | None) -> str | None:
        """Why this Authorization header does not let a caller from another machine in; None when it does."""
        if not self.token:
            return "this daemon has no api_token set: its API answers only on the device itself"
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "missing API token: send 'Authorization: Bearer <api_token>'"
        # Constant time: how long a wrong guess took must not tell how much of it was right.
        if not hmac.compare_digest(_bytes(presented.strip()), self.token):
            return "invalid API token"
        return None

    def origin_allowed(self, request: web.Request) -> bool:
        """No Origin (not a browser), the daemon's own origin, or one listed in allowed_origins."""
        header = request.headers.get(hdrs.ORIGIN)
        if header is None:
            return True
        origin = origin_of(header)
        if origin is None:
            return False
        if origin in self.allowed_origins:
            return True
        # Same origin: the page was loaded from the host:port the browser is now connecting to (its Host).
        own = origin_of(f"{origin[0]}://{request.host}")
        return own is not None and own[1:] == origin[1:]


def _bytes(text: str) -> bytes:
    # surrogatepass: header text that is not valid UTF-8 still compares (and never matches) instead of raising.
    return text.encode("utf-8", "surrogatepass")


def _area(request: web.Request) -> str | None:
    """"api", "ws" or None, by the matched route and by the path, so no spelling of a path slips past."""
    resource = request.match_info.route.resource
    paths = (resource.canonical if resource is not None else "", request.path)
    if any(path.startswith(API_PREFIXES) or path.rstrip("/") in API_PATHS for path in paths):
        return "api"
    return "ws" if WS_PATH in paths else None


def _unauthorized(message: str) -> web.Response:
    error = ApiError(401, message, code="unauthorized", kind="authentication_error")
    return web.json_response(error.body(), status=401, headers={hdrs.WWW_AUTHENTICATE: "Bearer"})


def _forbidden_origin(origin: str) -> web.Response:
    error = ApiError(403, f"origin {origin[:200]!r} may not open the kiosk WebSocket: only the daemon's own "
                     "origin and those in allowed_origins may", code="forbidden_origin", kind="permission_error")
    return web.json_response(error.body(), status=403)


def guard(settings: Settings) -> Middleware:
    """The middleware enforcing the token and Origin rules; it reports the exposure once at start."""
    policy = Policy.from_settings(settings)
    _report(settings, policy)
    _quiet_request_echo()

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        area = _area(request)
        refusal = policy.token_refusal(request.headers.get(hdrs.AUTHORIZATION)) if area == "api" else ""
        request[_TOKEN_OK] = refusal is None
        if area == "api" and not is_loopback(request.remote):
            if refusal is not None:
                # Never the header itself: a wrong token is often a right one for something else.
                _LOGGER.info("refused %s %r from %s: %s", request.method, request.path, request.remote, refusal)
                request.app[METRICS].error("unauthorized", refusal, callers_fault=True)
                return _unauthorized(refusal)
        elif area == "ws" and not policy.origin_allowed(request):
            origin = request.headers.get(hdrs.ORIGIN, "")
            _LOGGER.info("refused WebSocket from origin %r (peer %s)", origin[:200], request.remote)
            request.app[METRICS].error("forbidden_origin", "origin refused", callers_fault=True)
            return _forbidden_origin(origin)
        return await handler(request)

    return security


class _NoRequestEcho(logging.Filter):
    """aiohttp logs a request it cannot parse with the parser's error, which quotes the offending raw line: an
    Authorization header with a stray control character, or an overlong one, would land in the journal as is.
    Keep the fact and the error's kind, drop the quote."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = (f"{record.getMessage()}: {type(exc).__name__} (status {exc.code}; the request text is "
                          "not logged, it may hold credentials)")
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def _quiet_request_echo() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _NoRequestEcho) for f in logger.filters):  # one app per process, but tests make many
        logger.addFilter(_NoRequestEcho())


def _report(settings: Settings, policy: Policy) -> None:
    if is_loopback(settings.host):
        return
    if not policy.token:
        _LOGGER.warning("listening on %s (not loopback) without an api_token: /v1 and /api refuse every caller "
                        "from another machine with 401; set api_token (env KIOSKD_API_TOKEN, or api_token_file) "
                        "to let them in", settings.host)
    elif len(policy.token) < MIN_TOKEN_CHARS:
        _LOGGER.warning("api_token is shorter than %d characters: use a long random one (openssl rand -hex 32)",
                        MIN_TOKEN_CHARS)
    else:
        _LOGGER.info("listening on %s: /v1 and /api require the api_token from other machines", settings.host)
