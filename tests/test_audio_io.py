"""Audio sources and sinks: real WAV files, real FIFOs, the real PortAudio library (this machine has no sound card),
and the callback bridges driven from real foreign threads."""

from __future__ import annotations

import asyncio
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from audio.io import AudioDeviceError, BlockQueue, PlaybackBuffer, list_devices, open_sink, open_source
from audio.io_devices import DeviceSink, DeviceSource, input_callback, output_callback
from audio.io_files import PipeSink, PipeSource, WavFileSink, WavFileSource
from audio.pcm import AudioChunk

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def constant(value: int, seconds: float, rate: int) -> AudioChunk:
    return AudioChunk(np.full(round(seconds * rate), value, dtype="<i2").tobytes(), rate)


def ramp(count: int, start: int = 0) -> bytes:
    """Distinct samples, so reordering or loss shows up in a byte comparison."""
    return ((np.arange(count) + start) % 30000).astype("<i2").tobytes()


def write_wav(path: Path, frames: np.ndarray, rate: int, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1 if frames.ndim == 1 else frames.shape[1])
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames.tobytes())


def wav_info(path: Path) -> tuple[int, int, float, np.ndarray]:
    """(rate, channels, seconds, samples) of a WAV file, read the way any other program would."""
    with wave.open(str(path), "rb") as wav:
        rate, channels, count = wav.getframerate(), wav.getnchannels(), wav.getnframes()
        samples = np.frombuffer(wav.readframes(count), dtype="<i2")
    return rate, channels, count / rate, samples


class Ticker:
    """Measures how late a 10 ms asyncio.sleep loop wakes: a blocked event loop shows up as a late tick."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - before - 0.01)
            self.ticks += 1

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# --- WAV file source -------------------------------------------------------------------------------------------


def test_wav_source_delivers_mono_16k_blocks_in_real_time(tmp_path: Path) -> None:
    path = tmp_path / "utterance.wav"
    stereo = np.stack([np.full(22050, 1000, "<i2"), np.full(22050, 3000, "<i2")], axis=1)  # 1 s, L != R
    write_wav(path, stereo, 22050)

    async def scenario() -> tuple[list[AudioChunk], float]:
        source = WavFileSource(path, sample_rate=16000, realtime=True, block_ms=30, trailing_silence_s=0.2)
        await source.start()
        chunks: list[AudioChunk] = []
        started = time.monotonic()
        with pytest.raises(EOFError):
            while True:
                chunks.append(await source.read())
        elapsed = time.monotonic() - started
        with pytest.raises(EOFError):
            await source.read()  # Stays at the end.
        await source.close()
        return chunks, elapsed

    chunks, elapsed = run(scenario())
    assert {chunk.sample_rate for chunk in chunks} == {16000}
    assert all(chunk.frames == 480 for chunk in chunks[:-1])  # 30 ms blocks
    samples = np.concatenate([chunk.samples() for chunk in chunks])
    assert abs(len(samples) - 1.2 * 16000) <= 2
    assert set(samples[:16000].tolist()) == {2000}  # mono: the mean of the two channels
    assert not samples[-3200:].any()  # 0.2 s of trailing silence
    assert 1.1 <= elapsed < 1.7, f"1.2 s of audio took {elapsed:.2f} s"


def test_wav_source_without_pacing_is_fast_and_can_loop(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    write_wav(path, np.frombuffer(ramp(16000), "<i2"), 16000)

    async def scenario() -> None:
        fast = WavFileSource(path, realtime=False)
        await fast.start()
        started, frames = time.monotonic(), 0
        with pytest.raises(EOFError):
            while True:
                frames += (await fast.read()).frames
        assert frames == 16000 and time.monotonic() - started < 0.2

        looping = WavFileSource(path, realtime=False, loop=True)
        await looping.start()
        pcm = b"".join([(await looping.read()).pcm for _ in range(100)])  # 3 s from a 1 s file
        assert pcm[: 16000 * 2] == pcm[16000 * 2 : 32000 * 2] == ramp(16000)
        await looping.close()
        await looping.close()  # idempotent
        with pytest.raises(EOFError):
            await looping.read()

    run(scenario())


def test_wav_source_close_interrupts_a_paced_read(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_wav(path, np.zeros(16000 * 5, "<i2"), 16000)

    async def scenario() -> None:
        source = WavFileSource(path, block_ms=50)
        await source.start()
        for _ in range(3):
            await source.read()
        pending = asyncio.create_task(source.read())
        await asyncio.sleep(0.01)
        await source.close()
        with pytest.raises(EOFError):
            await asyncio.wait_for(pending, 0.05)

    run(scenario())


def test_wav_source_rejects_missing_and_unsupported_files(tmp_path: Path) -> None:
    eight_bit = tmp_path / "8bit.wav"
    write_wav(eight_bit, np.full(800, 128, "u1"), 8000, width=1)

    async def scenario() -> None:
        with pytest.raises(AudioDeviceError, match=r"cannot read WAV file .*missing\.wav"):
            await WavFileSource(tmp_path / "missing.wav").start()
        with pytest.raises(AudioDeviceError, match="8-bit samples; only 16-bit"):
            await WavFileSource(eight_bit).start()

    run(scenario())


# --- pipe source -----------------------------------------------------------------------------------------------


def test_pipe_source_hears_two_writers_in_order_without_blocking_the_loop(tmp_path: Path) -> None:
    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    first, second = ramp(8001), ramp(12000, start=9000)  # 8001 samples: not a whole number of blocks

    def writer() -> None:
        time.sleep(0.2)  # The source waits for a writer meanwhile.
        with fifo.open("wb") as pipe:
            pipe.write(first)
        time.sleep(0.3)  # No writer at all: the source must wait for the next one, not end.
        with fifo.open("wb") as pipe:
            pipe.write(second[:5001])
            pipe.flush()
            time.sleep(0.05)
            pipe.write(second[5001:])  # An odd split: half a sample arrives first.

    async def scenario() -> tuple[list[AudioChunk], Ticker]:
        source = PipeSource(fifo, sample_rate=16000, block_ms=30)
        await source.start()
        ticker = Ticker().start()
        thread = threading.Thread(target=writer)
        thread.start()
        chunks: list[AudioChunk] = []
        while sum(len(chunk.pcm) for chunk in chunks) < len(first) + len(second):
            chunks.append(await source.read())
        await asyncio.to_thread(thread.join)
        await ticker.stop()
        await source.close()
        return chunks, ticker

    chunks, ticker = run(scenario())
    assert b"".join(chunk.pcm for chunk in chunks) == first + second
    assert all(len(chunk.pcm) % 2 == 0 and 0 < len(chunk.pcm) <= 960 for chunk in chunks)
    assert ticker.ticks > 40 and ticker.worst < 0.08, f"the loop stalled for {ticker.worst * 1000:.0f} ms"


def test_pipe_source_close_while_waiting_is_prompt_and_idle(tmp_path: Path) -> None:
    fifo = tmp_path / "created-by-source.fifo"  # missing: the source creates the FIFO

    async def scenario() -> None:
        source = PipeSource(fifo)
        await source.start()
        assert fifo.is_fifo()
        with fifo.open("wb") as pipe:  # A writer comes and goes: the source must not spin on the hang-up.
            pipe.write(ramp(480))
        assert (await source.read()).pcm == ramp(480)
        pending = asyncio.create_task(source.read())
        cpu = time.process_time()
        await asyncio.sleep(0.3)
        assert time.process_time() - cpu < 0.1, "the source busy-waits for a writer"
        assert not pending.done()
        started = time.monotonic()
        await source.close()
        with pytest.raises(EOFError):
            await asyncio.wait_for(pending, 0.1)
        assert time.monotonic() - started < 0.1
        await source.close()  # idempotent

    run(scenario())


def test_pipe_source_follows_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "mic.raw"
    path.write_bytes(ramp(960))

    async def scenario() -> None:
        source = PipeSource(path, block_ms=30)
        await source.start()
        assert (await source.read()).pcm == ramp(480)
        assert (await source.read()).pcm == ramp(480, start=480)
        with path.open("ab") as file:
            file.write(ramp(100, start=960))
        assert (await asyncio.wait_for(source.read(), 1.0)).pcm == ramp(100, start=960)
        await source.close()

    run(scenario())


# --- WAV file sink ---------------------------------------------------------------------------------------------


def test_wav_sink_writes_a_valid_file_and_resamples(tmp_path: Path) -> None:
    path = tmp_path / "speaker.wav"

    async def scenario() -> None:
        sink = WavFileSink(path, sample_rate=22050, realtime=False)
        await sink.start()
        assert wav_info(path)[2] == 0.0  # valid before anything is played
        await sink.play(constant(1000, 0.5, 22050))
        await sink.drain()
        assert wav_info(path)[2] == pytest.approx(0.5)  # valid while the sink is open
        await sink.play(constant(-2000, 0.5, 16000))  # resampled to 22050
        await sink.drain()
        assert not sink.playing
        await sink.close()
        await sink.close()  # idempotent
        with pytest.raises(AudioDeviceError, match="closed"):
            await sink.play(constant(1, 0.1, 22050))

    run(scenario())
    rate, channels, seconds, samples = wav_info(path)
    assert (rate, channels) == (22050, 1)
    assert seconds == pytest.approx(1.0, abs=2 / 22050)
    assert set(samples[:11025].tolist()) == {1000} and set(samples[11025:].tolist()) == {-2000}


def test_wav_sink_backpressure_and_barge_in(tmp_path: Path) -> None:
    path = tmp_path / "speaker.wav"

    async def scenario() -> dict[str, float]:
        sink = WavFileSink(path, sample_rate=22050, realtime=True, buffer_seconds=0.5)
        await sink.start()
        firsts: list[float] = []
        sink.on_first_sample = lambda: firsts.append(time.monotonic())
        started = time.monotonic()
        play = asyncio.create_task(sink.play(constant(1000, 3.0, 22050)))
        await asyncio.sleep(0.4)
        assert not play.done(), "3 s were queued at once: no backpressure"
        assert sink.playing
        drain = asyncio.create_task(sink.drain())
        await asyncio.sleep(0.05)
        assert not drain.done()
        stopped = time.monotonic()
        dropped = sink.stop_now()
        await asyncio.wait({play, drain}, timeout=0.05)
        returned = time.monotonic() - stopped
        assert play.done() and drain.done()
        await asyncio.sleep(0.05)
        assert not sink.playing  # (the block in flight at stop_now() may still finish: at most 20 ms)
        after_stop = wav_info(path)[2]
        await asyncio.sleep(0.2)
        assert wav_info(path)[2] == after_stop, "audio kept playing after stop_now()"
        await sink.play(constant(500, 0.2, 22050))  # a second burst
        await sink.play(constant(500, 0.2, 22050))  # continues the burst: no new first sample
        await sink.drain()
        await sink.close()
        return {"played": stopped - started, "dropped": dropped, "returned": returned, "file": after_stop,
                "firsts": len(firsts), "first_delay": firsts[0] - started}  # fmt: skip

    result = run(scenario())
    assert result["returned"] < 0.05
    assert 0.4 <= result["dropped"] <= 0.65  # about buffer_seconds
    assert abs(result["file"] - result["played"]) < 0.06, result  # the file holds what was played, no more
    assert result["firsts"] == 2 and result["first_delay"] < 0.05
    assert wav_info(path)[2] == pytest.approx(result["file"] + 0.4, abs=0.01)
    events = [json.loads(line) for line in Path(f"{path}.events").read_text().splitlines()]
    names = [event["event"] for event in events]
    assert names == ["start", "first_sample", "stop_now", "first_sample", "drain", "close"]
    assert events[2]["seconds"] == pytest.approx(result["dropped"], abs=1e-3)


# --- pipe sink -------------------------------------------------------------------------------------------------


def test_pipe_sink_writes_raw_pcm_to_a_fifo_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "speaker.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    expected = ramp(16000 * 3 // 10)
    received = bytearray()

    def read_all() -> None:
        deadline = time.monotonic() + 5
        while len(received) < len(expected) and time.monotonic() < deadline:
            if select.select([reader], [], [], 0.05)[0]:
                received.extend(os.read(reader, 65536))

    async def scenario() -> float:
        sink = PipeSink(fifo, sample_rate=16000, realtime=True)
        await sink.start()
        thread = threading.Thread(target=read_all)
        thread.start()
        started = time.monotonic()
        await sink.play(AudioChunk(expected, 16000))
        await sink.drain()
        elapsed = time.monotonic() - started
        await asyncio.to_thread(thread.join)
        await sink.close()
        return elapsed

    try:
        elapsed = run(scenario())
    finally:
        os.close(reader)
    assert bytes(received) == expected
    assert 0.28 <= elapsed < 0.6  # paced: 0.3 s of audio take 0.3 s


def test_pipe_sink_without_a_reader_drops_audio_and_keeps_going(tmp_path: Path) -> None:
    fifo = tmp_path / "nobody-listens.fifo"

    async def scenario() -> None:
        sink = PipeSink(fifo, sample_rate=16000, realtime=False)
        await sink.start()
        assert fifo.is_fifo()
        await asyncio.wait_for(sink.play(constant(1, 2.0, 16000)), 1.0)
        await asyncio.wait_for(sink.drain(), 1.0)
        await sink.close()

    run(scenario())


# --- PortAudio devices -----------------------------------------------------------------------------------------


def test_list_devices_reports_portaudio_devices() -> None:
    devices = list_devices()
    assert isinstance(devices, list)
    for device in devices:
        assert {"index", "name", "max_input_channels", "max_output_channels", "default_samplerate"} <= set(device)


def test_default_devices_fail_clearly_without_a_sound_card() -> None:
    if list_devices():
        pytest.skip("this machine has audio devices")

    async def scenario() -> None:
        source = open_source("default", 16000)
        assert isinstance(source, DeviceSource)
        with pytest.raises(AudioDeviceError, match=r"default input device.*no input devices"):
            await source.start()
        await source.close()
        sink = open_sink("default", 22050)
        assert isinstance(sink, DeviceSink)
        with pytest.raises(AudioDeviceError, match=r"default output device.*no output devices"):
            await sink.start()
        await sink.close()
        with pytest.raises(AudioDeviceError, match="input device 'no-such-microphone'"):
            await open_source("device:no-such-microphone", 16000).start()

    run(scenario(), timeout=5)


def test_missing_portaudio_is_an_audio_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # what `import sounddevice` does without libportaudio
    with pytest.raises(AudioDeviceError, match="PortAudio is not available"):
        list_devices()
    with pytest.raises(AudioDeviceError, match="PortAudio is not available"):
        run(DeviceSource(None).start())


def test_audio_modules_import_without_sounddevice() -> None:
    code = "import sys, audio.io, audio.io_files, audio.io_devices; print('sounddevice' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_input_callback_bridge_from_a_foreign_thread() -> None:
    import sounddevice

    async def scenario() -> None:
        queue = BlockQueue(asyncio.get_running_loop(), max_blocks=10)
        callback = input_callback(queue)

        def portaudio_thread() -> None:
            block = bytearray(960)  # PortAudio reuses its buffer: the callback must copy it
            for index in range(30):
                block[:2] = struct.pack("<h", index)
                flags = sounddevice.CallbackFlags()
                flags.input_overflow = index % 10 == 0
                callback(block, 480, None, flags)
            queue.fail_threadsafe(AudioDeviceError("input device 'usb' stopped delivering audio (unplugged?)"))

        await asyncio.to_thread(portaudio_thread)
        await asyncio.sleep(0.05)  # The blocks were scheduled onto this loop; let them land.
        assert (len(queue), queue.dropped_blocks, queue.overflows) == (10, 20, 3)
        heads = [struct.unpack("<h", (await queue.get())[:2])[0] for _ in range(10)]
        assert heads == list(range(20, 30))  # the oldest were dropped; the newest kept in order
        with pytest.raises(AudioDeviceError, match="unplugged"):
            await queue.get()

    run(scenario())


def test_output_callback_from_a_foreign_thread() -> None:
    buffer = PlaybackBuffer()
    reports: list[tuple[bool, int]] = []
    callback = output_callback(buffer, lambda first, nbytes: reports.append((first, nbytes)))
    outputs: list[bytes] = []

    def portaudio_thread(blocks: int) -> None:
        for _ in range(blocks):
            out = bytearray(b"\xff" * 800)
            callback(out, 400, None, None)
            outputs.append(bytes(out))

    def in_thread(blocks: int) -> None:
        thread = threading.Thread(target=portaudio_thread, args=(blocks,))
        thread.start()
        thread.join()

    buffer.push(ramp(500))
    in_thread(3)
    assert outputs == [ramp(400), ramp(100, start=400) + bytes(600), bytes(800)]  # silence on underrun
    assert reports == [(True, 800), (False, 200)]
    buffer.push(ramp(300))
    assert buffer.clear() == 600  # barge-in
    buffer.push(ramp(10))
    in_thread(1)
    assert reports[-1] == (True, 20)  # a new burst after the buffer ran empty


# --- settings ------------------------------------------------------------------------------------------------


def test_open_source_and_sink_parse_settings(tmp_path: Path) -> None:
    assert isinstance(open_source(f"wav:{tmp_path}/a.wav", 16000), WavFileSource)
    assert isinstance(open_source(f"pipe:{tmp_path}/mic", 16000), PipeSource)
    assert isinstance(open_sink(f"wav:{tmp_path}/out.wav", 22050), WavFileSink)
    assert isinstance(open_sink(f"pipe:{tmp_path}/out", 22050), PipeSink)
    stdin = open_source("pipe:-", 16000)
    assert isinstance(stdin, PipeSource) and stdin.path == Path("/dev/stdin")
    by_index = open_source("device:3", 16000)
    assert isinstance(by_index, DeviceSource) and by_index.device == 3
    bare = open_sink("USB Audio: hw:1,0", 22050)
    assert isinstance(bare, DeviceSink) and bare.device == "USB Audio: hw:1,0"
    assert isinstance(open_source("7", 16000), DeviceSource)
    assert open_sink("device:default", 22050).sample_rate == 22050
    with pytest.raises(AudioDeviceError, match="voice input switched off"):
        open_source("none", 16000)
    with pytest.raises(AudioDeviceError, match="voice output switched off"):
        open_sink("none", 22050)
    for bad in ("alsa:hw0", "hw:1,0", "", "wav:", "none:x"):
        with pytest.raises(ValueError, match="audio device setting"):
            open_source(bad, 16000)
