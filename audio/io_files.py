"""Microphones and speakers made of files and pipes, for headless kiosks, tests and benchmarks.

They behave like the devices in `audio.io_devices`: a source paces its blocks like a microphone, a sink "plays" in
real time so queued audio exists and barge-in can drop it. File work happens in worker threads; a FIFO is read with
the loop's own readiness callbacks (non-blocking), so closing a source that waits for a writer is instant.
The sinks live in `audio.io_sinks` (their decisions are described there) and are re-exported here.

Decisions:
- `WavFileSource` reads the whole file at start() (kiosk test utterances are seconds long) and starts its real-time
  clock at the first read(), not at start(): a daemon may open its microphone long before it listens.
- `PipeSource` creates the FIFO when the path does not exist. It delivers only what arrives (no silence between
  writers); the bytes left over when a writer closes come out as one short block. A FIFO is reopened after its
  writer closes, so the next writer is heard; a regular file is followed like `tail -f`. The pipe is not drained
  while `queue_blocks` are waiting: the writer waits instead of audio being dropped (`dropped_blocks` stays 0).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
import wave
from pathlib import Path

import numpy as np

from audio.io import AudioDeviceError, BlockQueue
from audio.io_sinks import PacedFileSink, PipeSink, WavFileSink, wav_header
from audio.pcm import SAMPLE_WIDTH, AudioChunk, resample, silence

_LOGGER = logging.getLogger(__name__)
_READ_SIZE = 65536


def load_wav(path: str | Path, sample_rate: int, trailing_silence_s: float = 0.0) -> bytes:
    """A 16-bit PCM WAV file (any rate, any channel count) as mono PCM at `sample_rate`, plus trailing silence."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioDeviceError(f"cannot read WAV file {path}: {exc}") from exc
    if width != SAMPLE_WIDTH:
        raise AudioDeviceError(f"WAV file {path} has {8 * width}-bit samples; only 16-bit PCM is supported")
    samples = np.frombuffer(frames, dtype="<i2")
    if channels > 1:
        mixed = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
        samples = np.rint(mixed).astype("<i2")
    pcm = resample(samples.tobytes(), rate, sample_rate)
    return pcm + silence(trailing_silence_s, sample_rate).pcm


class WavFileSource:
    """A WAV file heard like a microphone: blocks of `block_ms`, paced in real time when `realtime`, then
    `trailing_silence_s` of silence, then EOFError (or from the start again when `loop`)."""

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = 16000,
        realtime: bool = True,
        block_ms: int = 30,
        loop: bool = False,
        trailing_silence_s: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.realtime = realtime
        self.loop = loop
        self.trailing_silence_s = trailing_silence_s
        self.dropped_blocks = 0  # A file never overflows.
        self._block_bytes = max(1, sample_rate * block_ms // 1000) * SAMPLE_WIDTH
        self._pcm: bytes | None = None
        self._pos = 0
        self._due: float | None = None  # When the next block has been "recorded" (monotonic).
        self._closed = asyncio.Event()

    async def start(self) -> None:
        if self._pcm is None:
            self._pcm = await asyncio.to_thread(load_wav, self.path, self.sample_rate, self.trailing_silence_s)

    async def read(self) -> AudioChunk:
        if self._closed.is_set():
            raise EOFError(f"{self.path} is closed")
        if self._pcm is None:
            raise AudioDeviceError(f"WAV source {self.path} was not started")
        if self._pos >= len(self._pcm):
            if not self.loop or not self._pcm:
                raise EOFError(f"end of {self.path}")
            self._pos = 0
        block = self._pcm[self._pos : self._pos + self._block_bytes]
        self._pos += len(block)
        if self.realtime:
            await self._wait_recorded(len(block))
        return AudioChunk(block, self.sample_rate)

    async def _wait_recorded(self, nbytes: int) -> None:
        """Sleep until a microphone would have finished recording this block; EOFError if closed meanwhile."""
        now = time.monotonic()
        self._due = (now if self._due is None else self._due) + nbytes / (SAMPLE_WIDTH * self.sample_rate)
        try:
            async with asyncio.timeout(max(0.0, self._due - now)):
                await self._closed.wait()
        except TimeoutError:
            return
        raise EOFError(f"{self.path} is closed")

    async def close(self) -> None:
        self._closed.set()


class PipeSource:
    """Raw s16le mono PCM at `sample_rate` from a FIFO (or a followed file), in blocks of `block_ms`."""

    def __init__(self, path: str | Path, sample_rate: int = 16000, block_ms: int = 30, queue_blocks: int = 200):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.queue_blocks = queue_blocks
        self.dropped_blocks = 0  # The writer waits instead (see the module docstring).
        self._block_bytes = max(1, sample_rate * block_ms // 1000) * SAMPLE_WIDTH
        self._queue: BlockQueue | None = None
        self._fd: int | None = None
        self._follow = False  # A regular file: read in a thread and poll at its end.
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[bytes] | None = None

    async def start(self) -> None:
        if self._queue is not None:
            return
        self._follow = await asyncio.to_thread(self._prepare)
        self._fd = self._open()
        self._queue = BlockQueue(asyncio.get_running_loop(), self.queue_blocks)
        self._task = asyncio.create_task(self._pump(self._queue), name=f"pipe source {self.path}")

    def _prepare(self) -> bool:
        """Create a missing FIFO; True when the path is a regular file (to be followed)."""
        try:
            if not self.path.exists():
                os.mkfifo(self.path)
                _LOGGER.info("created FIFO %s for audio input", self.path)
            mode = self.path.stat().st_mode
        except OSError as exc:
            raise AudioDeviceError(f"cannot use {self.path} as audio input: {exc}") from exc
        if stat.S_ISDIR(mode):
            raise AudioDeviceError(f"cannot use {self.path} as audio input: it is a directory")
        return stat.S_ISREG(mode)

    def _open(self) -> int:
        # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer.
        flags = os.O_RDONLY | (0 if self._follow else os.O_NONBLOCK)
        try:
            return os.open(self.path, flags)
        except OSError as exc:
            raise AudioDeviceError(f"cannot open {self.path} for audio input: {exc}") from exc

    async def _pump(self, queue: BlockQueue) -> None:
        pending = bytearray()
        try:
            while True:
                data = await (self._read_file() if self._follow else self._read_fifo())
                pending += data
                cut = len(pending) if not data else len(pending) - len(pending) % self._block_bytes
                cut -= cut % SAMPLE_WIDTH  # An odd byte waits for its other half.
                for offset in range(0, cut, self._block_bytes):
                    await queue.put_wait(bytes(pending[offset : min(cut, offset + self._block_bytes)]))
                del pending[:cut]
        except (OSError, AudioDeviceError) as exc:
            queue.fail(exc if isinstance(exc, AudioDeviceError) else AudioDeviceError(f"reading {self.path}: {exc}"))

    async def _read_fifo(self) -> bytes:
        """The next bytes from the FIFO; b"" when its writer closed (the FIFO is then reopened for the next)."""
        assert self._fd is not None
        while True:
            await self._readable(self._fd)
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                # Reopen: the old descriptor would report hang-up forever; a new one waits for the next writer.
                os.close(self._fd)
                self._fd = None
                self._fd = self._open()
            return data

    async def _readable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def _read_file(self) -> bytes:
        assert self._fd is not None
        self._inflight = asyncio.ensure_future(asyncio.to_thread(os.read, self._fd, _READ_SIZE))
        data = await asyncio.shield(self._inflight)
        if not data:
            await asyncio.sleep(0.05)
        return data

    async def read(self) -> AudioChunk:
        if self._queue is None:
            raise AudioDeviceError(f"pipe source {self.path} was not started")
        return AudioChunk(await self._queue.get(), self.sample_rate)

    async def close(self) -> None:
        if self._queue is not None:
            self._queue.fail(EOFError(f"{self.path} is closed"))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._inflight is not None:  # A thread may still be reading the descriptor: let it finish first.
            await asyncio.gather(self._inflight, return_exceptions=True)
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


__all__ = ["PacedFileSink", "PipeSink", "PipeSource", "WavFileSink", "WavFileSource", "load_wav", "wav_header"]
