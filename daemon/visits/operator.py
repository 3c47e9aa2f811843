"""Operator unlock on the kiosk screen: a PIN (checked against its salted hash) gives a token that opens the
whole history for `operator_unlock_seconds`; `operator_lockout_attempts` wrong PINs in a row refuse every try,
the right PIN too, for `operator_lockout_seconds`."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemon.visits.pin import verify_pin
from daemon.visits.tokens import new_token, token_key

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unlocked:
    token: str
    expires_in: float


class OperatorRefusal(Exception):
    """An unlock that is refused: `code` is disabled, wrong_pin (with `attempts_left`) or locked_out (with
    `retry_after` seconds)."""

    def __init__(self, code: str, message: str, *, attempts_left: int | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.attempts_left, self.retry_after = code, attempts_left, retry_after


class OperatorAccess:
    def __init__(self, pin_hash: str, attempts: int, lockout_seconds: float, unlock_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hash = pin_hash
        self._attempts, self._lockout, self._unlock = attempts, lockout_seconds, unlock_seconds
        self._clock = clock
        self._failures = 0
        self._locked_until = 0.0
        self._tokens: dict[bytes, float] = {}  # token key -> when it expires
        self._lock = asyncio.Lock()  # one PIN is checked at a time: guesses in parallel count one by one

    @property
    def enabled(self) -> bool:
        return bool(self._hash)

    async def unlock(self, pin: str) -> Unlocked:
        """A new operator token for the right PIN; raises OperatorRefusal."""
        if not self.enabled:
            raise OperatorRefusal("operator_unlock_disabled", "operator unlock is not set up on this kiosk "
                                  "(setting operator_pin)")
        async with self._lock:
            if refusal := self._locked_out():
                raise refusal
            if await asyncio.to_thread(verify_pin, pin, self._hash):
                self._failures = 0
                token = new_token()
                self._tokens[token_key(token)] = self._clock() + self._unlock
                _LOGGER.info("operator unlocked the history for %g s", self._unlock)
                return Unlocked(token, self._unlock)
            self._failures += 1
            left = self._attempts - self._failures
            if left > 0:
                _LOGGER.warning("wrong operator PIN (%d attempt(s) left before a lockout)", left)
                raise OperatorRefusal("wrong_pin", "wrong PIN", attempts_left=left)
            self._failures, self._locked_until = 0, self._clock() + self._lockout
            _LOGGER.warning("%d wrong operator PINs: unlock is refused for %g s", self._attempts, self._lockout)
            raise self._locked_out() or OperatorRefusal("locked_out", "too many wrong PINs", retry_after=1)

    def _locked_out(self) -> OperatorRefusal | None:
        remaining = self._locked_until - self._clock()
        if remaining <= 0:
            return None
        seconds = max(1, math.ceil(remaining))
        return OperatorRefusal("locked_out", f"too many wrong PINs; try again in {seconds} s", retry_after=seconds)

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        expires = self._tokens.get(token_key(token))
        if expires is None:
            return False
        if expires <= self._clock():
            del self._tokens[token_key(token)]
            return False
        return True

    def lock(self, token: str | None) -> bool:
        """Revoke an operator token; whether it was valid."""
        valid = self.valid(token)
        if valid and token:
            del self._tokens[token_key(token)]
        return valid
