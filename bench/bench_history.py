"""Time to first token over a ten-turn conversation: one session alone, and two sessions taking turns.

Scenario A: one session, `--turns` turns. Scenario B: two sessions (A and B) alternating every turn, `--turns`
turns each, once with the per-session KV cache (`--context-cache 4`, the default) and once without it
(`--context-cache 0`, the reference that shows what the cache saves). Every scenario gets a fresh daemon and
one warm-up answer in a session of its own, so turn 1 is a new conversation on a warm model, as on a kiosk.

TTFT is measured by the client, from sending the `chat` frame to the first `token` frame; the daemon's own
`timings.ttft_ms` and `prompt_eval_tokens` are shown next to it. Targets: turn N / turn 1 <= 1.5 for one session
and <= 2.0 (the worse of the two sessions) when switching.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

TARGET_ONE, TARGET_TWO = 1.5, 2.0
WARMUP = "Hello! What can you help me with?"
TOPICS = {
    "A": ("the harbour", "the old lighthouse", "the fish market", "the ship museum", "the town hall",
          "the castle on the hill", "the botanical garden", "the railway station", "the cathedral", "the old bridge"),
    "B": ("the public library", "the science centre", "the city park", "the art gallery", "the concert hall",
          "the zoo", "the university", "the football stadium", "the river walk", "the night market"),
}


def question(label: str, turn: int, repeat: int = 1) -> str:
    """A question that asks for a long answer. Each repeat starts on another topic, and the topic comes first, so
    a new session shares no more than the system prompt with whatever the model read last."""
    topics = TOPICS[label]
    topic = topics[(turn - 1 + 3 * (repeat - 1)) % len(topics)]
    return f"{topic[0].upper()}{topic[1:]}: please describe it in detail, its history, what visitors can see there " \
           "and how to get there."


@dataclass
class Turn:
    scenario: str
    repeat: int
    session: str
    turn: int
    ttft_ms: float
    server_ttft_ms: float
    prompt_tokens: int
    prompt_eval_tokens: int
    completion_tokens: int
    reason: str


@dataclass
class Scenario:
    name: str
    context_cache: int
    labels: tuple[str, ...]
    turns: list[Turn]
    load: tuple[float, float]

    def at(self, label: str, turn: int, attr: str = "ttft_ms") -> float:
        """The median over the repeats of one field of one turn."""
        return statistics.median(float(getattr(t, attr)) for t in self.turns if (t.session, t.turn) == (label, turn))

    def ratio(self, label: str, last: int, attr: str = "ttft_ms") -> float:
        return self.at(label, last, attr) / self.at(label, 1, attr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """`kioskd serve` as a subprocess on a free port with its own state directory."""

    def __init__(self, args: argparse.Namespace, context_cache: int, workdir: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        argv = [sys.executable, "-m", "daemon", "serve", "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
                "--state-dir", str(workdir / f"state-{context_cache}"), "--model", str(args.model),
                "--temperature", "0", "--max-tokens", str(args.max_tokens), "--context-cache", str(context_cache),
                "--idle-reset", "0", *args.daemon_arg]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
        self.log = workdir / f"daemon-{context_cache}.log"
        with self.log.open("w") as log:
            root = Path(__file__).resolve().parent.parent
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env)

    async def wait_ready(self, http: aiohttp.ClientSession, limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                async with http.get(self.url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the daemon was not ready after {limit:.0f} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def ask(ws: aiohttp.ClientWebSocketResponse, text: str, session: str | None) -> tuple[str, float, dict[str, Any]]:
    """One answer: (session id, client-side TTFT in ms, the done frame)."""
    sent = time.perf_counter()
    await ws.send_str(json.dumps({"type": "chat", "session": session, "text": text}))
    first = 0.0
    while True:
        frame = json.loads((await asyncio.wait_for(ws.receive(), 600)).data)
        if frame["type"] == "session":
            session = frame["session"]
        elif frame["type"] == "token" and not first:
            first = time.perf_counter()
        elif frame["type"] == "done":
            assert session is not None
            return session, (first - sent) * 1000 if first else float("nan"), frame
        elif frame["type"] == "error":
            raise RuntimeError(f"error frame: {frame}")


async def run_scenario(args: argparse.Namespace, name: str, labels: tuple[str, ...], context_cache: int,
                       workdir: Path) -> Scenario:
    daemon = Daemon(args, context_cache, workdir)
    turns: list[Turn] = []
    load_before = os.getloadavg()[0]
    try:
        async with aiohttp.ClientSession() as http:
            await daemon.wait_ready(http)
            async with http.ws_connect(daemon.url + "/ws", max_msg_size=0) as ws:
                await ask(ws, WARMUP, None)
                for repeat in range(1, args.repeats + 1):  # New sessions every time.
                    sessions: dict[str, str | None] = dict.fromkeys(labels)
                    for turn in range(1, args.turns + 1):
                        for label in labels:
                            sessions[label], ttft, done = await ask(ws, question(label, turn, repeat), sessions[label])
                            usage, timings = done["usage"], done["timings"]
                            turns.append(Turn(name, repeat, label, turn, round(ttft, 1), timings["ttft_ms"],
                                              usage["prompt_tokens"], timings["prompt_eval_tokens"],
                                              usage["completion_tokens"], done["reason"]))
                            sys.stderr.write(f"{name} #{repeat} {label}{turn}: ttft {ttft:.0f} ms, prompt "
                                             f"{usage['prompt_tokens']} ({timings['prompt_eval_tokens']} read)\n")
    finally:
        daemon.stop()
    return Scenario(name, context_cache, labels, turns, (round(load_before, 2), round(os.getloadavg()[0], 2)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(scenario: Scenario) -> Iterator[str]:
    yield f"### {scenario.name} (--context-cache {scenario.context_cache}; load average {scenario.load[0]} -> " \
          f"{scenario.load[1]})"
    yield ""
    yield "| turn | session | prompt tokens | read (prompt_eval_tokens) | daemon TTFT ms | client TTFT ms |"
    yield "|---:|:---:|---:|---:|---:|---:|"
    for t in (t for t in scenario.turns if t.repeat == 1):
        cells = [scenario.at(t.session, t.turn, a) for a in ("prompt_tokens", "prompt_eval_tokens", "server_ttft_ms",
                                                              "ttft_ms")]
        yield f"| {t.turn} | {t.session} | " + " | ".join(f"{c:.0f}" for c in cells) + " |"
    yield ""


def summary(scenarios: list[Scenario], last: int) -> tuple[list[str], bool]:
    lines = [f"| scenario | session | turn 1 TTFT ms | turn {last} TTFT ms | ratio (client) | ratio (daemon) "
             "| target |", "|:---|:---:|---:|---:|---:|---:|:---|"]
    ok = True
    for s in scenarios:
        target = TARGET_ONE if len(s.labels) == 1 else TARGET_TWO if s.context_cache else None
        for label in s.labels:
            ratio = s.ratio(label, last)
            passed = target is None or ratio <= target
            ok = ok and passed
            goal = f"<= {target}: {verdict(passed)}" if target else "reference"
            lines.append(f"| {s.name} | {label} | {s.at(label, 1):.0f} | {s.at(label, last):.0f} | "
                         f"{ratio:.2f} | {s.ratio(label, last, 'server_ttft_ms'):.2f} | {goal} |")
    return lines, ok


def machine() -> dict[str, Any]:
    import llama_cpp

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ram_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(ram_kb / 1024**2, 1),
            "python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__,
            "kernel": platform.release()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_history", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="GGUF model file")
    p.add_argument("--turns", type=int, default=10, help="turns per session")
    p.add_argument("--max-tokens", type=int, default=90,
                   help="reply length; 90 brings ten turns to about 1,000 tokens of history")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every scenario this many times with new sessions; the tables show medians")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the two-session run without the context cache")
    p.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `kioskd serve` (repeatable), e.g. --daemon-arg=--threads=2")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        sys.stderr.write(f"no model file {args.model}\n")
        return 2
    plan = [("one session", ("A",), 4), ("two sessions", ("A", "B"), 4)]
    if args.reference:
        plan.append(("two sessions, no cache", ("A", "B"), 0))
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        scenarios = [asyncio.run(run_scenario(args, name, labels, cache, Path(tmp))) for name, labels, cache in plan]
    info = machine()
    lines = [f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM; python {info['python']}, "
             f"llama-cpp-python {info['llama_cpp_python']}",
             f"model: {args.model.name}; --max-tokens {args.max_tokens}, --temperature 0, {args.turns} turns; "
             f"{args.repeats} repeat(s), medians shown; prompt at turn {args.turns}: "
             f"{scenarios[0].at('A', args.turns, 'prompt_tokens'):.0f} tokens", ""]
    for scenario in scenarios:
        lines += table(scenario)
    rows, ok = summary(scenarios, args.turns)
    lines += [*rows, "", f"overall: {verdict(ok)}"]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        result = {"machine": info, "model": str(args.model), "max_tokens": args.max_tokens, "turns": args.turns,
                  "repeats": args.repeats,
                  "scenarios": [asdict(s) for s in scenarios], "pass": ok}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
