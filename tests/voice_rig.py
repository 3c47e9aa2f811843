"""A microphone and a screen for voice tests of the running daemon.

`Mic` streams real-time audio into the daemon's FIFO microphone (`--audio-input pipe:PATH`): silence all the
time, as a real microphone delivers, with utterances spliced in on demand. `Screen` is a WebSocket client on
loopback (so it owns the kiosk's voice) that records every frame with its arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from audio.pcm import AudioChunk
from audio.speaker import SpeechSynthesizer
from audio.synthesizer import SynthesizerError
from tests.speech import blocks, speech_span

Frame = dict[str, Any]
BLOCK_S = 0.03


class Mic:
    """Writes 30 ms blocks into the FIFO at real-time pace from its own thread."""

    def __init__(self, fifo: Path, sample_rate: int = 16000) -> None:
        self._fifo = fifo
        self._rate = sample_rate
        self._pending: deque[AudioChunk] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-mic", daemon=True)

    def start(self) -> None:
        if not self._fifo.exists():
            os.mkfifo(self._fifo)
        self._thread.start()

    def say(self, audio: AudioChunk) -> float:
        """Queue `audio`; returns the monotonic time its speech will end (for latency measurements)."""
        with self._lock:
            queued = sum(b.seconds for b in self._pending)
            self._pending.extend(blocks(audio, BLOCK_S))
        _, speech_end = speech_span(audio)
        return time.monotonic() + queued + speech_end

    def busy(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _next_block(self) -> bytes:
        """What the microphone hears next: the queued audio, else digital silence (subclasses add a room)."""
        with self._lock:
            return self._pending.popleft().pcm if self._pending else b"\0\0" * round(BLOCK_S * self._rate)

    def _run(self) -> None:
        with open(self._fifo, "wb", buffering=0) as pipe:  # Blocks until the daemon opens its end.
            next_at = time.monotonic()
            while not self._stop.is_set():
                block = self._next_block()
                try:
                    pipe.write(block)
                except BrokenPipeError:
                    return
                next_at += len(block) / 2 / self._rate
                time.sleep(max(0.0, next_at - time.monotonic()))


@dataclass
class Received:
    at: float
    frame: Frame


class Screen:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Received] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(Received(time.monotonic(), json.loads(msg.data)))
                self._changed.set()

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    def mark(self) -> int:
        return len(self.frames)

    def since(self, mark: int, kind: str | None = None) -> list[Received]:
        return [r for r in self.frames[mark:] if kind is None or r.frame["type"] == kind]

    async def wait_for(self, check: Callable[[Frame], bool], since: int = 0, within: float = 30.0) -> Received:
        deadline = time.monotonic() + within
        seen = since
        while True:
            for received in self.frames[seen:]:
                if check(received.frame):
                    return received
            seen = len(self.frames)
            left = deadline - time.monotonic()
            if left <= 0:
                kinds = [r.frame for r in self.frames[since:]][-12:]
                raise AssertionError(f"no matching frame in {within} s; last frames: {kinds}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def voice_screen(url: str) -> AsyncIterator[Screen]:
    """A kiosk screen on the daemon at `url`, once its voice path is available."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws") as ws:
        client = Screen(ws)
        await client.wait_for(is_type("hello"))
        await client.wait_for(lambda f: f["type"] in ("hello", "voice") and _voice(f).get("available") is True,
                              within=60)
        try:
            yield client
        finally:
            await client.close()


def _voice(frame: Frame) -> Frame:
    voice: Frame = frame["voice"] if frame["type"] == "hello" else frame
    return voice


def is_type(kind: str, **fields: Any) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == kind and all(f.get(k) == v for k, v in fields.items())


class FailsOn:
    """The real voice, except that it raises (as onnxruntime or espeak may) on sentences containing `word`."""

    def __init__(self, real: SpeechSynthesizer, word: str) -> None:
        self._real = real
        self._word = word
        self.sample_rate = real.sample_rate

    async def synthesize(self, text: str) -> AudioChunk:
        if self._word in text:
            raise SynthesizerError(f"synthesis failed for {text[:20]!r}: onnxruntime Fail (injected)")
        return await self._real.synthesize(text)
