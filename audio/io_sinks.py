"""Speakers made of files and pipes, for headless kiosks, tests and benchmarks (`audio.io_files` re-exports them).

They behave like the devices in `audio.io_devices`: a sink "plays" in real time so queued audio exists and barge-in
can drop it. File work happens in worker threads.

Decisions:
- `WavFileSink` truncates the file at start() and rewrites the header sizes after every block, so the file is a
  valid WAV whenever a test reads it. Only played audio is written (no silence between bursts). Its sidecar
  `<path>.events` gets one JSON line per event: start, first_sample (seconds = offset in the file), stop_now
  (seconds dropped), drain (seconds in the file), close.
- `PipeSink` creates a missing path as a FIFO. With no reader, or a reader that stops reading for 0.5 s, audio is
  dropped rather than stalling playback: a speaker nobody listens to still plays.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import select
import stat
import struct
import time
from pathlib import Path
from typing import BinaryIO

from audio.io import AudioDeviceError, BufferedSink
from audio.pcm import SAMPLE_WIDTH

_LOGGER = logging.getLogger(__name__)


class PacedFileSink(BufferedSink):
    """A sink that "plays" by writing blocks of `block_ms` to an output in a worker thread, paced at real time
    when `realtime` (else as fast as the output takes them). Subclasses open, write and close the output."""

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        realtime: bool,
        buffer_seconds: float = 1.0,
        block_ms: int = 20,
        events: bool = False,
    ) -> None:
        super().__init__(sample_rate, buffer_seconds)
        self.path = Path(path)
        self.realtime = realtime
        self._block_bytes = max(1, sample_rate * block_ms // 1000) * SAMPLE_WIDTH
        self._events_path = Path(f"{path}.events") if events else None
        self._events: list[str] = []
        self._written = 0
        self._clock = 0.0
        self._task: asyncio.Task[None] | None = None

    # Subclasses implement these; they run in a worker thread.
    def _open_output(self) -> None: ...

    def _write_output(self, pcm: bytes) -> None: ...

    def _close_output(self) -> None: ...

    async def start(self) -> None:
        self._check()
        if self._task is not None:
            return
        try:
            await asyncio.to_thread(self._open_output)
            if self._events_path is not None:
                await asyncio.to_thread(self._events_path.write_text, "")
        except OSError as exc:
            raise AudioDeviceError(f"cannot open {self.path} for audio output: {exc}") from exc
        self._event("start", 0.0)
        self._task = asyncio.create_task(self._pace(), name=f"audio sink {self.path}")

    async def _pace(self) -> None:
        try:
            while not self._closed:
                changed = self._changed  # Taken first: a notify during the awaits below is not missed.
                if self._events:
                    await asyncio.to_thread(self._write_events, self._take_events())
                data, first = self._buffer.pull(self._block_bytes if self.realtime else 1 << 20)
                if data:
                    await self._play_block(data, first)
                elif not self._closed:
                    await changed.wait()
        except OSError as exc:
            self._fail(AudioDeviceError(f"writing audio to {self.path} failed: {exc}"))

    async def _play_block(self, data: bytes, first: bool) -> None:
        # A block continuing a burst starts where the previous one ended, even if the loop woke us late: like a
        # device clock, playback catches up instead of drifting (up to 0.25 s behind, then it resynchronises).
        now = time.monotonic()
        start = self._clock if not first and now - 0.25 < self._clock else now
        await asyncio.to_thread(self._write_output, data)
        if first:
            self._event("first_sample", self._written / (SAMPLE_WIDTH * self._stream_rate))
        self._written += len(data)
        self._clock = start + self._seconds(len(data)) if self.realtime else time.monotonic()
        self._played(first, self._clock)
        if self.realtime:
            await asyncio.sleep(self._clock - time.monotonic())

    def stop_now(self) -> float:
        dropped = super().stop_now()
        self._event("stop_now", dropped)
        return dropped

    async def drain(self) -> None:
        generation = self._generation
        await super().drain()
        if generation == self._generation:  # Not cut short by stop_now() or close().
            self._event("drain", self._written / (SAMPLE_WIDTH * self._stream_rate))

    def _event(self, name: str, seconds: float) -> None:
        if self._events_path is not None:
            self._events.append(json.dumps({"t": time.time(), "event": name, "seconds": round(seconds, 4)}))
            self._notify()  # Wakes the pacer, which writes the line.

    def _take_events(self) -> list[str]:
        lines, self._events = self._events, []
        return lines

    def _write_events(self, lines: list[str]) -> None:
        if self._events_path is not None and lines:
            with self._events_path.open("a", encoding="utf-8") as file:
                file.write("".join(line + "\n" for line in lines))

    async def close(self) -> None:
        if not self._mark_closed():
            return
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)  # Ends within one block: it sees _closed.
        self._event("close", self._written / (SAMPLE_WIDTH * self._stream_rate))
        try:
            await asyncio.to_thread(self._write_events, self._take_events())
            await asyncio.to_thread(self._close_output)
        except OSError as exc:
            _LOGGER.warning("closing audio output %s: %s", self.path, exc)


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV file holding `data_bytes` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1,
        sample_rate, sample_rate * SAMPLE_WIDTH, SAMPLE_WIDTH, 8 * SAMPLE_WIDTH, b"data", data_bytes,
    )  # fmt: skip


class WavFileSink(PacedFileSink):
    """A speaker that appends what it plays to a WAV file, valid after every block; see the module docstring."""

    def __init__(
        self, path: str | Path, sample_rate: int = 22050, realtime: bool = True, buffer_seconds: float = 1.0
    ) -> None:
        super().__init__(path, sample_rate, realtime, buffer_seconds, events=True)
        self._file: BinaryIO | None = None
        self._data_bytes = 0

    def _open_output(self) -> None:
        self._file = self.path.open("w+b")
        self._data_bytes = 0
        self._file.write(wav_header(self._stream_rate, 0))
        self._file.flush()

    def _write_output(self, pcm: bytes) -> None:
        # Samples first, then the sizes: a reader in between sees a valid file that is one block shorter.
        assert self._file is not None
        self._file.seek(44 + self._data_bytes)
        self._file.write(pcm)
        self._data_bytes += len(pcm)
        self._file.seek(4)
        self._file.write(struct.pack("<I", 36 + self._data_bytes))
        self._file.seek(40)
        self._file.write(struct.pack("<I", self._data_bytes))
        self._file.flush()

    def _close_output(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


class PipeSink(PacedFileSink):
    """A speaker that writes raw s16le mono PCM at `sample_rate` to a FIFO (or appends to a file), paced in real
    time like WavFileSink; see the module docstring for a FIFO without a reader."""

    def __init__(
        self, path: str | Path, sample_rate: int = 22050, realtime: bool = True, buffer_seconds: float = 1.0
    ) -> None:
        super().__init__(path, sample_rate, realtime, buffer_seconds)
        self._fd: int | None = None
        self._warned = False

    def _open_output(self) -> None:
        if not self.path.exists():
            os.mkfifo(self.path)
            _LOGGER.info("created FIFO %s for audio output", self.path)
        if not stat.S_ISFIFO(self.path.stat().st_mode):
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)  # A FIFO is opened when a reader is there.

    def _connect(self) -> int | None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            if not self._warned:
                _LOGGER.warning("no reader on %s: audio output is dropped until one opens it", self.path)
                self._warned = True
            return None
        _LOGGER.info("a reader opened %s: audio output flows", self.path)
        self._warned = False
        return self._fd

    def _write_output(self, pcm: bytes) -> None:
        fd = self._fd if self._fd is not None else self._connect()
        if fd is None:
            return
        view, deadline = memoryview(pcm), time.monotonic() + 0.5
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    _LOGGER.warning("the reader of %s stopped reading: %d bytes of audio dropped", self.path, len(view))
                    return
                select.select([], [fd], [], 0.05)
            except BrokenPipeError:
                _LOGGER.info("the reader of %s went away", self.path)
                self._close_output()
                return

    def _close_output(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


__all__ = ["PacedFileSink", "PipeSink", "WavFileSink", "wav_header"]
