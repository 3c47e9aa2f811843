"""`kioskd operator-pin`: read a PIN (a hidden prompt on a terminal, else the first line of stdin) and print the
line for the setting `operator_pin`: its salted hash, never the PIN."""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from daemon.visits.pin import hash_pin, pin_problem


def _read_pin(stdin: TextIO) -> str:
    if stdin.isatty():
        pin = getpass.getpass("Operator PIN: ")
        if pin != getpass.getpass("Same PIN again: "):
            raise ValueError("the two PINs differ")
        return pin
    return stdin.readline().strip()


def run_operator_pin(stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        pin = _read_pin(stdin)
    except (ValueError, EOFError, KeyboardInterrupt) as exc:
        sys.stderr.write(f"kioskd operator-pin: {exc or 'no PIN given'}\n")
        return 2
    if problem := pin_problem(pin):
        sys.stderr.write(f"kioskd operator-pin: {problem}\n")
        return 2
    stdout.write(hash_pin(pin) + "\n")
    return 0
