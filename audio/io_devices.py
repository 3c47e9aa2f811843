"""The microphone and speaker through PortAudio (`sounddevice`), with the loop never blocked.

Opening, starting and closing a stream can take a while (ALSA probes its plugins), so it happens in a worker
thread. The stream callbacks run on PortAudio's thread and only copy: the input callback hands a copy of each block
to the loop through `BlockQueue.push_threadsafe`; the output callback copies queued audio out of a locked
`PlaybackBuffer` (silence on underrun) and tells the loop how much it took. Everything else (resampling, counting,
hooks) runs on the loop.

Decisions:
- A device that cannot record or play at the requested rate is opened at its default rate. Input is resampled in
  `read()` (on the loop: linear interpolation of one 30 ms block costs microseconds, and the callback stays a copy);
  output is resampled in `play()`.
- A device that vanishes shows up as the stream finishing on its own (`finished_callback`), or, when the driver
  simply stops calling back, as no block for `stall_timeout_s`: both make `read()` / `play()` / `drain()` raise
  AudioDeviceError naming the device.
- Closing a source makes a pending or later `read()` raise EOFError (the end of the input, not a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from audio.io import AudioDeviceError, BlockQueue, BufferedSink, PlaybackBuffer
from audio.pcm import AudioChunk

_LOGGER = logging.getLogger(__name__)

Device = str | int | None
RawCallback = Callable[[Any, int, Any, Any], None]


def import_sounddevice() -> Any:
    """The sounddevice module, imported on first use: it raises OSError on import when libportaudio is missing."""
    try:
        import sounddevice
    except (OSError, ImportError) as exc:
        raise AudioDeviceError(
            f"PortAudio is not available ({exc}); install Debian's libportaudio2 and kioskd's 'voice' extra"
        ) from exc
    return sounddevice


def describe(device: Device, kind: str) -> str:
    return f"the default {kind} device" if device is None else f"{kind} device {device!r}"


def _why(sd: Any, exc: Exception, kind: str) -> str:
    """The error plus what PortAudio can see, so a log line alone tells a missing card from a wrong name."""
    try:
        count = sum(1 for info in sd.query_devices() if info[f"max_{kind}_channels"] > 0)
        apis = ", ".join(api["name"] for api in sd.query_hostapis()) or "none"
    except sd.PortAudioError:
        return str(exc)
    if count == 0:
        return f"{exc}: PortAudio finds no {kind} devices (host APIs: {apis}); is there a sound card?"
    return f"{exc} (PortAudio finds {count} {kind} device(s); `kioskd doctor` lists them)"


def _open_stream(sd: Any, device: Device, kind: str, rate: int, block_ms: int, **kwargs: Any) -> tuple[Any, int]:
    """Open and start a mono int16 stream of `block_ms` blocks at `rate`, or at the device's default rate when it
    cannot do `rate`."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    stream_class = sd.RawInputStream if kind == "input" else sd.RawOutputStream
    try:
        info = sd.query_devices(device, kind=kind)
        try:
            check(device=device, channels=1, dtype="int16", samplerate=rate)
        except (sd.PortAudioError, ValueError):
            fallback = int(info["default_samplerate"])
            _LOGGER.info(
                "%s cannot do %d Hz; opening it at %d Hz and resampling", describe(device, kind), rate, fallback
            )
            rate = fallback
        blocksize = max(1, rate * block_ms // 1000)
        stream = stream_class(device=device, samplerate=rate, blocksize=blocksize, channels=1, dtype="int16", **kwargs)
        stream.start()
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioDeviceError(f"cannot open {describe(device, kind)}: {_why(sd, exc, kind)}") from exc
    _LOGGER.info("opened %s (%s) at %d Hz", describe(device, kind), info["name"], rate)
    return stream, rate


def _shutdown(stream: Any) -> None:
    stream.abort(ignore_errors=True)  # abort, not stop: do not wait for queued buffers to play out
    stream.close(ignore_errors=True)


def input_callback(queue: BlockQueue) -> RawCallback:
    """The RawInputStream callback: copy the block (PortAudio reuses `indata`) and hand it to the loop."""

    def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
        queue.push_threadsafe(bytes(indata), bool(status))

    return callback


def output_callback(buffer: PlaybackBuffer, report: Callable[[bool, int], None]) -> RawCallback:
    """The RawOutputStream callback: copy queued audio out, silence for the rest; `report(first, nbytes)` is
    called (from PortAudio's thread; it must only schedule work on the loop) when audio was taken."""

    def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        size = len(outdata)
        data, first = buffer.pull(size)
        outdata[: len(data)] = data
        if len(data) < size:
            outdata[len(data) :] = bytes(size - len(data))
        if data:
            report(first, len(data))

    return callback


class DeviceSource:
    """A PortAudio microphone: blocks of `block_ms`, at most `queue_blocks` waiting (the oldest are dropped)."""

    def __init__(
        self,
        device: Device,
        sample_rate: int = 16000,
        block_ms: int = 30,
        queue_blocks: int = 100,
        stall_timeout_s: float = 3.0,
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.block_ms = block_ms
        self.queue_blocks = queue_blocks
        self.stall_timeout_s = stall_timeout_s
        self._stream: Any = None
        self._queue: BlockQueue | None = None
        self._stream_rate = sample_rate
        self._closing = False

    @property
    def dropped_blocks(self) -> int:
        return 0 if self._queue is None else self._queue.dropped_blocks

    @property
    def overflows(self) -> int:
        """Blocks PortAudio flagged (input overflow): audio lost before it reached us."""
        return 0 if self._queue is None else self._queue.overflows

    async def start(self) -> None:
        if self._closing:
            raise AudioDeviceError(f"{describe(self.device, 'input')} is closed")
        if self._stream is not None:
            return
        self._queue = BlockQueue(asyncio.get_running_loop(), self.queue_blocks)
        stream, self._stream_rate = await asyncio.to_thread(self._open, self._queue)
        if self._closing:  # close() ran while the stream was opening.
            await asyncio.to_thread(_shutdown, stream)
            return
        self._stream = stream

    def _open(self, queue: BlockQueue) -> tuple[Any, int]:
        sd = import_sounddevice()
        what = describe(self.device, "input")

        def finished() -> None:
            if not self._closing:
                queue.fail_threadsafe(AudioDeviceError(f"{what} stopped delivering audio (unplugged?)"))

        return _open_stream(
            sd, self.device, "input", self.sample_rate, self.block_ms,
            callback=input_callback(queue), finished_callback=finished,
        )  # fmt: skip

    async def read(self) -> AudioChunk:
        if self._queue is None:
            raise AudioDeviceError(f"{describe(self.device, 'input')} was not started")
        try:
            async with asyncio.timeout(self.stall_timeout_s):
                block = await self._queue.get()
        except TimeoutError:
            raise AudioDeviceError(
                f"{describe(self.device, 'input')} delivered no audio for {self.stall_timeout_s:g} s (unplugged?)"
            ) from None
        return AudioChunk(block, self._stream_rate).resampled(self.sample_rate)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._queue is not None:
            self._queue.fail(EOFError("audio input closed"))
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_shutdown, stream)


class DeviceSink(BufferedSink):
    """A PortAudio speaker fed from a `PlaybackBuffer` by the stream callback; see `BufferedSink` for the rest."""

    def __init__(
        self, device: Device, sample_rate: int = 22050, buffer_seconds: float = 1.0, block_ms: int = 20
    ) -> None:
        super().__init__(sample_rate, buffer_seconds)
        self.device = device
        self.block_ms = block_ms
        self._stream: Any = None
        self._latency = 0.0

    async def start(self) -> None:
        self._check()
        if self._stream is not None:
            return
        stream, self._stream_rate = await asyncio.to_thread(self._open, asyncio.get_running_loop())
        if self._closed:
            await asyncio.to_thread(_shutdown, stream)
            return
        self._stream, self._latency = stream, float(stream.latency)

    def _open(self, loop: asyncio.AbstractEventLoop) -> tuple[Any, int]:
        sd = import_sounddevice()
        what = describe(self.device, "output")

        # Both run on PortAudio's thread; RuntimeError: the loop is closed and nobody is listening any more.
        def report(first: bool, nbytes: int) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._pulled, first, nbytes)

        def finished() -> None:
            if not self._closed:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._fail, AudioDeviceError(f"{what} stopped playing (unplugged?)"))

        return _open_stream(
            sd, self.device, "output", self.sample_rate, self.block_ms, latency="low",
            callback=output_callback(self._buffer, report), finished_callback=finished,
        )  # fmt: skip

    def _pulled(self, first: bool, nbytes: int) -> None:
        # The block was handed to PortAudio now; it is heard until its length plus the output latency from now.
        self._played(first, time.monotonic() + self._seconds(nbytes) + self._latency)

    async def close(self) -> None:
        if not self._mark_closed():
            return
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_shutdown, stream)


def list_devices() -> list[dict[str, object]]:
    """PortAudio's devices: index, name, host API, channel counts, default rate and which are the defaults."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
        default_in, default_out = sd.default.device
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"PortAudio cannot list devices: {exc}") from exc
    return [
        {
            "index": int(info["index"]),
            "name": str(info["name"]),
            "hostapi": str(apis[info["hostapi"]]["name"]),
            "max_input_channels": int(info["max_input_channels"]),
            "max_output_channels": int(info["max_output_channels"]),
            "default_samplerate": float(info["default_samplerate"]),
            "default_input": info["index"] == default_in,
            "default_output": info["index"] == default_out,
        }
        for info in devices
    ]


__all__ = ["DeviceSink", "DeviceSource", "import_sounddevice", "input_callback", "list_devices", "output_callback"]
