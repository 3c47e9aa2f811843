"""The operator PIN, stored only as a salted scrypt hash: "scrypt$<salt hex>$<hash hex>"."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

SCHEME = "scrypt"
SALT_BYTES = 16
HASH_BYTES = 32
# scrypt's cost: about 50 ms and 16 MB per try, so guessing a short PIN offline from a stolen config is slow.
N, R, P = 2**14, 8, 1
MIN_DIGITS, MAX_DIGITS = 4, 12
_HASH = re.compile(rf"{SCHEME}\$([0-9a-f]{{{2 * SALT_BYTES}}})\$([0-9a-f]{{{2 * HASH_BYTES}}})")


def pin_problem(pin: str) -> str | None:
    """What is wrong with a PIN being set (None: it is fine)."""
    if not (pin.isascii() and pin.isdigit()) or not MIN_DIGITS <= len(pin) <= MAX_DIGITS:
        return f"a PIN is {MIN_DIGITS} to {MAX_DIGITS} digits (0-9)"
    return None


def _scrypt(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8", "surrogatepass"), salt=salt, n=N, r=R, p=P, dklen=HASH_BYTES)


def hash_pin(pin: str, salt: bytes | None = None) -> str:
    """The line to put in the setting `operator_pin`."""
    if problem := pin_problem(pin):
        raise ValueError(problem)
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    return f"{SCHEME}${salt.hex()}${_scrypt(pin, salt).hex()}"


def pin_hash_problem(value: object) -> str | None:
    """For the setting: empty, or a hash made by `kioskd operator-pin`; a plain PIN is refused."""
    if value == "" or (isinstance(value, str) and _HASH.fullmatch(value)):
        return None
    hint = " (it looks like a plain PIN: never store the PIN itself)" if isinstance(value, str) and \
        value.strip().isdigit() else ""
    return (f"expected a hash made by `kioskd operator-pin` ('{SCHEME}$<salt hex>$<hash hex>'){hint}; the value "
            "is not shown")


def verify_pin(pin: str, stored: str) -> bool:
    """Whether `pin` matches the stored hash; the hashes are compared in constant time. Slow (scrypt): call it
    off the event loop."""
    match = _HASH.fullmatch(stored)
    if match is None or len(pin) > 64:
        return False
    salt, expected = bytes.fromhex(match[1]), bytes.fromhex(match[2])
    return hmac.compare_digest(_scrypt(pin, salt), expected)
