"""How an upstream answer can fail, typed so the failover can tell "try the local model" from "the answer is
lost"; every one is an EngineError with a stable code for the clients."""

from __future__ import annotations

from daemon.messages import EngineError, ModelNotReady


class UpstreamFailure(EngineError):
    """The upstream failed before writing any text: the question can still go to the local model."""

    code = "upstream_unavailable"
    reason = "unreachable"
    """The failover metric's label."""


class UpstreamUnreachable(UpstreamFailure):
    """No connection (refused, no route, connect timeout)."""

    reason = "unreachable"


class UpstreamRefused(UpstreamFailure):
    """The upstream answered with an error status: overloaded (429), down (5xx) or not letting us in (401)."""

    reason = "refused"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the upstream refused the question with HTTP {status}: {message}")
        self.status = status


class FirstTokenTimeout(UpstreamFailure):
    reason = "first_token_timeout"


class UpstreamRejected(EngineError):
    """The upstream found the question itself wrong (HTTP 400, 422): another engine would not do better."""

    code = "upstream_refused"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the upstream rejected the question with HTTP {status}: {message}")
        self.status = status


class UpstreamLost(EngineError):
    """The upstream stopped in the middle of an answer (connection lost, or stalled past the read timeout):
    the text so far stays with the caller and the answer ends as interrupted, like a local model failure."""

    code = "upstream_lost"


# A ModelNotReady, so the HTTP layer answers 503 with Retry-After: like a kiosk whose model is still loading,
# it cannot answer now but may soon.
class UpstreamUnavailable(ModelNotReady):
    """The upstream is down and there is no local model to answer instead."""

    code = "upstream_unavailable"


# Statuses that say the upstream (not the question) is the problem; any other 4xx is the question's fault.
DOWN_STATUSES = frozenset({401, 403, 404, 408, 429})


def refusal(status: int, message: str) -> EngineError:
    if status >= 500 or status in DOWN_STATUSES:
        return UpstreamRefused(status, message)
    return UpstreamRejected(status, message)
