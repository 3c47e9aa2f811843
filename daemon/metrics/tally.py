"""Today's tally for GET /status: answers, their times to first token, and the last error, kept across restarts.

A fleet reads "answers today" and "median time to first token today" per kiosk; a power cut at noon must not zero
the day. So the tally lives in a small JSON file under the state directory, rewritten (atomically, in a thread)
after each change, and starts afresh when the kiosk's local date changes. A file that cannot be read or makes no
sense is logged and replaced by an empty day: the status line is never a reason not to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.files import write_text_atomically

_LOGGER = logging.getLogger(__name__)

MAX_TTFT_MS = 600_000
"""Times to first token are kept as counts per whole millisecond up to here (longer ones count as this): the
median is exact to 1 ms and the file stays small however busy the day (a few hundred distinct values)."""

Today = Callable[[], datetime.date]


@dataclass(frozen=True)
class LastError:
    code: str
    message: str
    at: str
    """ISO-8601 UTC."""


@dataclass
class Day:
    day: str
    answers: int = 0
    ttft_ms: dict[int, int] = field(default_factory=dict)
    """How many answers had their first text after each whole number of milliseconds."""
    last_error: LastError | None = None

    def median_ttft_s(self) -> float | None:
        total = sum(self.ttft_ms.values())
        if not total:
            return None
        middle = [(total - 1) // 2, total // 2]  # the two middle ranks (the same one for an odd count)
        values: list[int] = []
        seen = 0
        for ms in sorted(self.ttft_ms):
            seen += self.ttft_ms[ms]
            while middle and middle[0] < seen:
                values.append(ms)
                middle.pop(0)
        return round(sum(values) / len(values) / 1000, 3)

    def to_json(self) -> dict[str, Any]:
        error = None if self.last_error is None else vars(self.last_error)
        return {"day": self.day, "answers": self.answers,
                "ttft_ms": {str(ms): n for ms, n in sorted(self.ttft_ms.items())}, "last_error": error}

    @classmethod
    def from_json(cls, data: Any) -> Day:
        """ValueError (or TypeError, KeyError) for anything but what to_json wrote."""
        if not isinstance(data, dict) or not isinstance(data["day"], str):
            raise ValueError("not a tally object")
        datetime.date.fromisoformat(data["day"])
        answers, ttft = data["answers"], data["ttft_ms"]
        if type(answers) is not int or answers < 0 or not isinstance(ttft, dict):
            raise ValueError("bad answers or ttft_ms")
        counts = {int(ms): n for ms, n in ttft.items()}
        if any(type(n) is not int or n < 1 or not 0 <= ms <= MAX_TTFT_MS for ms, n in counts.items()):
            raise ValueError("bad ttft_ms counts")
        error = data["last_error"]
        last = None if error is None else LastError(str(error["code"]), str(error["message"]), str(error["at"]))
        return cls(data["day"], answers, counts, last)


def local_today() -> datetime.date:
    return datetime.date.today()


class DayTally:
    """Today's answers and last error for one kiosk, saved to `path` after every change."""

    def __init__(self, path: Path, today: Today = local_today) -> None:
        self._path = path
        self._today = today
        self._day = Day(today().isoformat())
        self._dirty = False
        self._writer: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Take over the file's tally if it is today's; a missing, unreadable or corrupt file starts afresh."""
        try:
            day = await asyncio.to_thread(self._read)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as exc:
            _LOGGER.warning("the status tally %s cannot be used (%s: %s); today's counts start afresh",
                            self._path, type(exc).__name__, exc)
            return
        if day.day == self._today().isoformat():
            self._day = day

    def _read(self) -> Day:
        return Day.from_json(json.loads(self._path.read_text(encoding="utf-8")))

    @property
    def current(self) -> Day:
        """Today's tally (a new, empty one once the local date has changed)."""
        today = self._today().isoformat()
        if self._day.day != today:
            self._day = Day(today)
            self._changed()
        return self._day

    def answered(self, ttft_s: float | None) -> None:
        day = self.current
        day.answers += 1
        if ttft_s is not None:
            ms = min(MAX_TTFT_MS, max(0, round(ttft_s * 1000)))
            day.ttft_ms[ms] = day.ttft_ms.get(ms, 0) + 1
        self._changed()

    def failed(self, code: str, message: str) -> None:
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.current.last_error = LastError(code, message[:500], at)
        self._changed()

    def _changed(self) -> None:
        """Save soon, off the loop; changes made while a write runs are saved by one more write after it."""
        self._dirty = True
        if self._writer is None or self._writer.done():
            with contextlib.suppress(RuntimeError):  # no loop (a unit test): saved by a later change or at close
                self._writer = asyncio.get_running_loop().create_task(self._write_all(), name="status-tally")

    async def _write_all(self) -> None:
        while self._dirty:
            self._dirty = False
            text = json.dumps(self._day.to_json())
            try:
                await asyncio.to_thread(_save, self._path, text)
            except OSError as exc:  # a full or read-only disk: the tally lives on in memory
                _LOGGER.warning("cannot save the status tally %s: %s", self._path, exc)

    async def close(self) -> None:
        """Wait for the last write (and make one if a change is still unsaved)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._dirty:
            await self._write_all()


def _save(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, text)
