"""Microphone and speaker for the voice path, behind two small interfaces with device- and file-backed versions.

`AudioSource` is the microphone side (blocks of `AudioChunk` at a fixed rate), `AudioSink` the speaker side (queued
playback with backpressure and an instant barge-in `stop_now`). The devices (PortAudio through `sounddevice`) live in
`audio.io_devices`; WAV files and pipes with the same behaviour, for headless kiosks, tests and benchmarks, live in
`audio.io_files`. `open_source` / `open_sink` turn a setting string into one of them:

    "default"                  the PortAudio default device
    "device:<name or index>"   a PortAudio device by index or (part of its) name; a bare name or index without a
                               colon means the same ("USB Audio", "3"); names containing ":" need the prefix
    "wav:/path/file.wav"       input: the file heard like a microphone (real time, once); output: what is played
                               is written to the file (truncated at start), plus a `.events` sidecar
    "pipe:/path"               raw s16le mono at the requested rate through a FIFO (created when missing) or file;
                               "pipe:-" is the daemon's standard input (source) or output (sink)
    "none"                     voice input/output switched off: AudioDeviceError

This module holds what both kinds share: the error, the protocols, the bounded block queue that carries blocks from
a PortAudio thread (or a pipe) onto the event loop, and the loop-side half of every sink (`BufferedSink`). The
sounddevice module is imported only when a device is opened: it raises OSError on import when libportaudio is
missing, and a kiosk without voice must still start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from audio.pcm import SAMPLE_WIDTH, AudioChunk, resample

_LOGGER = logging.getLogger(__name__)
SCHEMES = ("default", "device", "wav", "pipe", "none")


class AudioDeviceError(Exception):
    """No device, the device vanished, or its stream failed; the message says which device and why."""


class AudioSource(Protocol):
    """The microphone side: `read()` returns the next block (20-50 ms) at `sample_rate`."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def dropped_blocks(self) -> int: ...

    async def start(self) -> None: ...

    async def read(self) -> AudioChunk: ...

    async def close(self) -> None: ...


class AudioSink(Protocol):
    """The speaker side: `play()` queues audio (waiting while the queue is full), `stop_now()` drops it at once."""

    on_first_sample: Callable[[], None] | None

    @property
    def sample_rate(self) -> int: ...

    @property
    def playing(self) -> bool: ...

    async def start(self) -> None: ...

    async def play(self, chunk: AudioChunk) -> None: ...

    async def drain(self) -> None: ...

    def stop_now(self) -> float: ...

    async def close(self) -> None: ...


class BlockQueue:
    """A bounded queue of PCM blocks read on the event loop and filled from the loop or from a foreign thread.

    A PortAudio callback calls `push_threadsafe`, which only schedules `put` on the loop: the callback must not
    take locks or wait. `put` drops the oldest block when the queue is full (a microphone cannot wait for a slow
    reader, and the newest audio matters most); `put_wait` waits instead, for sources that can (pipes). After
    `fail(error)` the blocks still queued are delivered, then `get()` raises the error.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_blocks: int) -> None:
        self._loop = loop
        self._max = max(1, max_blocks)
        self._blocks: deque[bytes] = deque()
        self._changed = asyncio.Event()
        self._error: BaseException | None = None
        self.dropped_blocks = 0
        self.overflows = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def push_threadsafe(self, block: bytes, overflow: bool = False) -> None:
        # RuntimeError: the loop is closed; the stream outlived the daemon and there is nobody to deliver to.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.put, block, overflow)

    def fail_threadsafe(self, error: BaseException) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.fail, error)

    def put(self, block: bytes, overflow: bool = False) -> None:
        if overflow:
            self.overflows += 1
        if self._error is not None:
            return
        if len(self._blocks) >= self._max:
            self._blocks.popleft()
            self.dropped_blocks += 1
        self._blocks.append(block)
        self._notify()

    async def put_wait(self, block: bytes) -> None:
        while len(self._blocks) >= self._max and self._error is None:
            await self._changed.wait()
        self.put(block)

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self._notify()

    async def get(self) -> bytes:
        """The oldest block, waiting for one (callers bound the wait with asyncio.timeout)."""
        while not self._blocks:
            if self._error is not None:
                raise self._error.with_traceback(None)
            await self._changed.wait()
        block = self._blocks.popleft()
        self._notify()  # Wakes a `put_wait` waiting for room.
        return block

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class PlaybackBuffer:
    """Audio queued for playback, shared between the loop (`push`, `clear`) and the player (`pull`), which may be
    a PortAudio thread: a deque of bytes under a lock held only for list operations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._idle = True  # Nothing played since the buffer last ran empty: the next sample starts a burst.

    @property
    def queued_bytes(self) -> int:
        return self._queued

    def push(self, pcm: bytes) -> None:
        with self._lock:
            self._chunks.append(pcm)
            self._queued += len(pcm)

    def pull(self, max_bytes: int) -> tuple[bytes, bool]:
        """Up to `max_bytes` of queued audio (less on underrun) and whether it starts a burst."""
        with self._lock:
            out = bytearray()
            while self._chunks and len(out) < max_bytes:
                head = self._chunks.popleft()
                take = max_bytes - len(out)
                if len(head) > take:
                    self._chunks.appendleft(head[take:])
                    head = head[:take]
                out += head
            self._queued -= len(out)
            first = bool(out) and self._idle
            self._idle = self._queued == 0
            return bytes(out), first

    def clear(self) -> int:
        with self._lock:
            dropped, self._queued, self._idle = self._queued, 0, True
            self._chunks.clear()
            return dropped


class BufferedSink:
    """The loop-side half of every sink: backpressure, drain, barge-in and the first-sample hook.

    A subclass plays `_buffer` at `_stream_rate` (a PortAudio callback or a paced task) and reports each block it
    played with `_played(first, until)` on the loop, `until` being the monotonic time the block ends.
    """

    def __init__(self, sample_rate: int, buffer_seconds: float) -> None:
        self.sample_rate = sample_rate
        self.buffer_seconds = buffer_seconds
        self.on_first_sample: Callable[[], None] | None = None
        self._stream_rate = sample_rate
        self._buffer = PlaybackBuffer()
        self._changed = asyncio.Event()
        self._generation = 0  # Bumped by stop_now and close: waiting play()/drain() calls from before return.
        self._busy_until = 0.0
        self._error: AudioDeviceError | None = None
        self._closed = False

    @property
    def playing(self) -> bool:
        return self._buffer.queued_bytes > 0 or time.monotonic() < self._busy_until

    def _seconds(self, nbytes: int) -> float:
        return nbytes / (SAMPLE_WIDTH * self._stream_rate)

    async def play(self, chunk: AudioChunk) -> None:
        """Queue `chunk` in pieces of 0.1 s, waiting while more than `buffer_seconds` are queued, so a long chunk
        is never queued whole and barge-in drops at most `buffer_seconds` plus the rest of this chunk."""
        self._check()
        pcm = resample(chunk.pcm, chunk.sample_rate, self._stream_rate)
        limit = self.buffer_seconds * self._stream_rate * SAMPLE_WIDTH
        piece = max(SAMPLE_WIDTH, self._stream_rate // 10 * SAMPLE_WIDTH)
        generation = self._generation
        for offset in range(0, len(pcm), piece):
            while self._buffer.queued_bytes >= limit:
                await self._changed.wait()
                if self._interrupted(generation):
                    return  # stop_now() or close(): this chunk is dropped with the rest.
            self._buffer.push(pcm[offset : offset + piece])
            self._notify()

    async def drain(self) -> None:
        """Wait until everything queued has been played; returns early on stop_now() or close()."""
        self._check()
        generation = self._generation
        while self.playing and not self._interrupted(generation):
            wait = None if self._buffer.queued_bytes else max(0.0, self._busy_until - time.monotonic())
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def stop_now(self) -> float:
        dropped = self._seconds(self._buffer.clear())
        self._busy_until = 0.0
        self._generation += 1
        self._notify()
        if dropped:
            _LOGGER.debug("barge-in dropped %.2f s of queued audio", dropped)
        return dropped

    def _played(self, first: bool, until: float) -> None:
        self._busy_until = until
        self._notify()
        if first and self.on_first_sample is not None:
            try:
                self.on_first_sample()
            except Exception:
                _LOGGER.exception("on_first_sample hook failed")

    def _fail(self, error: AudioDeviceError) -> None:
        if self._error is None and not self._closed:
            _LOGGER.warning("%s", error)
            self._error = error
            self._buffer.clear()
            self._generation += 1
            self._notify()

    def _mark_closed(self) -> bool:
        """Start closing; False when already closed (close() is idempotent)."""
        if self._closed:
            return False
        self._closed = True
        self._buffer.clear()
        self._generation += 1
        self._notify()
        return True

    def _interrupted(self, generation: int) -> bool:
        """Whether stop_now() or close() happened since `generation`; raises if the device failed meanwhile."""
        if generation == self._generation:
            return False
        if self._error is not None:
            raise self._error.with_traceback(None)
        return True

    def _check(self) -> None:
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._closed:
            raise AudioDeviceError("the audio sink is closed")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _parse_spec(spec: str) -> tuple[str, str]:
    """(scheme, argument) of a setting string; see the module docstring."""
    text = spec.strip()
    if text in ("default", "none"):
        return text, ""
    match = re.fullmatch(r"([A-Za-z][\w+.-]*):(.*)", text, flags=re.DOTALL)
    if match is None:
        if not text:
            raise ValueError("empty audio device setting; use 'default', 'device:<name>', 'wav:<path>' or 'none'")
        return "device", text
    scheme, arg = match.group(1).lower(), match.group(2).strip()
    if scheme not in SCHEMES or scheme in ("default", "none"):
        raise ValueError(
            f"unknown audio device setting {spec!r}: expected 'default', 'device:<name or index>', "
            "'wav:<path>', 'pipe:<path>' or 'none' (device names containing ':' need the 'device:' prefix)"
        )
    if not arg:
        raise ValueError(f"audio device setting {spec!r} needs a {'path' if scheme != 'device' else 'device'}")
    return scheme, arg


def _device_arg(arg: str) -> str | int | None:
    if arg in ("", "default"):
        return None
    return int(arg) if arg.isdigit() else arg


def open_source(spec: str, sample_rate: int) -> AudioSource:
    """The microphone named by a setting string (not started). ValueError for a malformed setting."""
    from audio.io_devices import DeviceSource
    from audio.io_files import PipeSource, WavFileSource

    scheme, arg = _parse_spec(spec)
    if scheme == "none":
        raise AudioDeviceError("voice input switched off")
    if scheme == "wav":
        return WavFileSource(arg, sample_rate=sample_rate)
    if scheme == "pipe":
        return PipeSource("/dev/stdin" if arg == "-" else arg, sample_rate=sample_rate)
    return DeviceSource(_device_arg(arg), sample_rate=sample_rate)


def open_sink(spec: str, sample_rate: int) -> AudioSink:
    """The speaker named by a setting string (not started). ValueError for a malformed setting."""
    from audio.io_devices import DeviceSink
    from audio.io_files import PipeSink, WavFileSink

    scheme, arg = _parse_spec(spec)
    if scheme == "none":
        raise AudioDeviceError("voice output switched off")
    if scheme == "wav":
        return WavFileSink(arg, sample_rate=sample_rate)
    if scheme == "pipe":
        return PipeSink("/dev/stdout" if arg == "-" else arg, sample_rate=sample_rate)
    return DeviceSink(_device_arg(arg), sample_rate=sample_rate)


def list_devices() -> list[dict[str, object]]:
    """PortAudio's devices for `kioskd doctor`; [] when there are none, AudioDeviceError when PortAudio is missing."""
    from audio.io_devices import list_devices as _list

    return _list()


__all__ = [
    "AudioDeviceError",
    "AudioSink",
    "AudioSource",
    "BlockQueue",
    "BufferedSink",
    "PlaybackBuffer",
    "list_devices",
    "open_sink",
    "open_source",
]
