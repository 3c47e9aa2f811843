"""The API's error type and the typed reads of request fields shared by the OpenAI request parsers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """A request the API refuses; rendered as an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str = "invalid_request", kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def typed(body: Mapping[str, Any], name: str, kind: type, default: Any, *, where: str = "") -> Any:
    """body[name] when it is a `kind` (null counts as absent); `where` prefixes the name of a nested field."""
    value = body.get(name)
    if value is None:
        return default
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 1.0 is the integer 1 (and JSON Schema agrees).
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, f"'{where}{name}' must be of type {TYPE_NAMES.get(kind, kind.__name__)}",
                       param=where + name)
    return value


TYPE_NAMES = {bool: "boolean", int: "integer", str: "string", dict: "object", list: "array"}


def only_keys(item: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """Unknown keys are refused rather than ignored: a misspelt field would otherwise vanish silently."""
    for key in item:
        if key not in allowed:
            raise ApiError(400, f"{where} has an unknown field {key!r:.40}", param=f"{where}.{key}")
