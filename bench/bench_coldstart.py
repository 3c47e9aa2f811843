"""Cold start (issue 19): process start -> READY=1 and READY -> first token, with and without persisted prefix
states; then the tokens each kind of turn costs, projected onto a Raspberry Pi 4 and Pi 5 (bench.bench_projection).

`kioskd serve` is started as systemd starts it: NOTIFY_SOCKET points at a datagram socket this bench owns, so the
moment of READY=1 is caught exactly (no /readyz polling). The bench connects to /ws right after READY=1 and asks
the first question; READY -> first token is until its first `token` frame. Two kinds of start, alternating:
"no states" (STATE_DIR/prefixes/ wiped: every system prompt prefix, the plain one and one per venue section, is
read by the model before READY) and "states on disk" (the same state directory again: they are loaded); with
--prime one untimed start comes first (the model file in the page cache, the knowledge index built). A start with
states on disk then asks a follow-up in the same session, a grounded venue question and a question worded as the
speech recognizer writes it (lower case, no punctuation), all on the text path; their token counts feed the
projection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.bench_daemon import Timer, _loadavg, daemon_command, environment, free_port, wait_quiet
from bench.bench_history import ask
from bench.bench_knowledge import default_model
from bench.bench_projection import TurnTokens, prefix_tree_tokens, projection_rows, startup_rows, stored_prefixes

_LOGGER = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
FIRST = "Write a short poem about a lighthouse keeper."
FOLLOW_UP = "Now make it funny, in four lines."
GROUNDED = "How much does it cost to print in colour?"
SPOKEN = "what time do you close on saturdays"  # as Vosk writes it: lower case, no punctuation
NO_STATES, STATES = "no states", "states on disk"
PREFIXES_LINE = re.compile(r"prompt prefixes: (\d+) loaded from disk, (\d+) computed, in ([\d.]+) s")


@dataclass
class Answer:
    label: str
    knowledge: str
    ttft_ms: float
    server_ttft_ms: float
    prompt_tokens: int
    prompt_eval_tokens: int
    completion_tokens: int


@dataclass
class Start:
    kind: str
    ready_s: float
    first_token_s: float
    """READY=1 -> the first token frame of the first question (connecting to /ws included)."""
    answers: list[Answer]
    prefixes_loaded: int = 0
    prefixes_built: int = 0
    prefix_seconds: float = 0.0
    other_cpu_pct: float = 0.0
    loadavg: tuple[float, ...] = field(default_factory=tuple)


class NotifySocket:
    """The datagram socket systemd would own: kioskd (systemd-python) sends READY=1 and STATUS= lines to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))

    def ready_at(self, proc: subprocess.Popen[bytes], limit: float) -> float:
        """perf_counter() when READY=1 arrived; RuntimeError when the process exits first or `limit` passes."""
        deadline = time.perf_counter() + limit
        while proc.poll() is None and time.perf_counter() < deadline:
            self._sock.settimeout(0.2)
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            if "READY=1" in data.decode(errors="replace").split("\n"):
                return time.perf_counter()
        raise RuntimeError(f"no READY=1 (exit status {proc.poll()}) within {limit:.0f} s")

    def close(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)


def serve_command(args: argparse.Namespace, port: int, state_dir: Path) -> list[str]:
    """bench_daemon's command, then what a kiosk runs instead (argparse keeps the last of a repeated flag)."""
    from daemon.settings import DEFAULT_SYSTEM_PROMPT

    cmd = daemon_command(args, port, state_dir)
    cmd += ["--system-prompt", DEFAULT_SYSTEM_PROMPT, "--log-level", "info", "--voice", "false", "--idle-reset", "0"]
    return cmd + (["--knowledge", str(args.venue)] if args.venue else [])


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_start(args: argparse.Namespace, kind: str, state_dir: Path) -> Start:
    """One start of `kind` in `state_dir`: READY=1, the four turns, then the daemon is stopped."""
    if kind == NO_STATES:
        shutil.rmtree(state_dir / "prefixes", ignore_errors=True)
    log = state_dir / "kioskd.log"
    wait_quiet(args.quiet_wait)
    start = Start(kind, 0.0, 0.0, [], loadavg=_loadavg())
    try:
        _serve_and_ask(args, state_dir, log, start)
    except Exception:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise
    if match := PREFIXES_LINE.search(log.read_text(errors="replace")):
        start.prefixes_loaded, start.prefixes_built = int(match[1]), int(match[2])
        start.prefix_seconds = float(match[3])
    _LOGGER.info("%s: READY after %.2f s, first token %.3f s later; prefixes %d loaded, %d built", kind,
                 start.ready_s, start.first_token_s, start.prefixes_loaded, start.prefixes_built)
    return start


def _serve_and_ask(args: argparse.Namespace, state_dir: Path, log: Path, start: Start) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIOSKD_", "WATCHDOG_"))}
    notify = NotifySocket(state_dir / "notify.sock")
    env["NOTIFY_SOCKET"] = str(notify.path)
    port = free_port()
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(serve_command(args, port, state_dir), stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    timer = Timer(("self", proc.pid))
    try:
        ready = notify.ready_at(proc, args.ready_limit)
        start.answers, first_token = asyncio.run(ask_turns(f"http://127.0.0.1:{port}", start.kind == STATES))
        start.other_cpu_pct = timer.other_cpu_pct()  # while the process still exists
    finally:
        stop(proc)
        notify.close()
    start.ready_s, start.first_token_s = round(ready - started, 3), round(first_token - ready, 3)


async def ask_turns(url: str, every_turn: bool) -> tuple[list[Answer], float]:
    """The first question at once (and with `every_turn` the other three); perf_counter() at its first token."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws") as ws:
        sent = time.perf_counter()
        session, first = await _answer(ws, "first question", FIRST, None)
        first_token = sent + first.ttft_ms / 1000
        if not every_turn:
            return [first], first_token
        _, follow_up = await _answer(ws, "follow-up", FOLLOW_UP, session)
        _, grounded = await _answer(ws, "grounded question", GROUNDED, None)
        _, spoken = await _answer(ws, "spoken question", SPOKEN, None)
    return [first, follow_up, grounded, spoken], first_token


async def _answer(ws: aiohttp.ClientWebSocketResponse, label: str, text: str,
                  session: str | None) -> tuple[str, Answer]:
    session, ttft_ms, done = await ask(ws, text, session)
    timings, usage = done.get("timings") or {}, done.get("usage") or {}
    return session, Answer(label, str(done.get("knowledge") or "-"), round(ttft_ms, 1),
                           float(timings.get("ttft_ms") or 0), int(usage.get("prompt_tokens") or 0),
                           int(timings.get("prompt_eval_tokens") or 0), int(usage.get("completion_tokens") or 0))


# ---- report ----

def _median(starts: list[Start], value: Any) -> float:
    return statistics.median(float(value(s)) for s in starts)


def start_rows(starts: list[Start]) -> list[str]:
    rows = ["| start | runs | start -> READY s | READY -> first token s | first question read / prompt tokens "
            "| daemon TTFT ms | prefixes loaded / built (s) | other CPU % |", "|" + " --- |" * 8]
    for kind in (NO_STATES, STATES):
        group = [s for s in starts if s.kind == kind]
        if not group:
            continue
        first = group[0].answers[0]
        rows.append(f"| {kind} | {len(group)} | {_median(group, lambda s: s.ready_s):.2f} "
                    f"| {_median(group, lambda s: s.first_token_s):.3f} "
                    f"| {first.prompt_eval_tokens} / {first.prompt_tokens} "
                    f"| {_median(group, lambda s: s.answers[0].server_ttft_ms):.0f} "
                    f"| {group[0].prefixes_loaded} / {group[0].prefixes_built} "
                    f"({_median(group, lambda s: s.prefix_seconds):.2f}) "
                    f"| {_median(group, lambda s: s.other_cpu_pct):.1f} |")
    return rows


def each_start_rows(starts: list[Start]) -> list[str]:
    """Every start on its own: on a shared machine one start's neighbours can be far busier than the next's."""
    rows = ["| # | start | start -> READY s | READY -> first token s | other CPU % | load average before |",
            "|" + " --- |" * 6]
    for i, s in enumerate(starts, 1):
        rows.append(f"| {i} | {s.kind} | {s.ready_s:.2f} | {s.first_token_s:.3f} | {s.other_cpu_pct:.1f} "
                    f"| {s.loadavg[0] if s.loadavg else '?'} |")
    return rows


def turn_tokens(starts: list[Start]) -> list[TurnTokens]:
    """Median token counts per turn over the starts that asked every turn (greedy: the same each time)."""
    starts = [s for s in starts if len(s.answers) > 1]
    out = []
    for i, answer in enumerate(starts[0].answers):
        def med(attr: str, i: int = i) -> int:
            return round(statistics.median(int(getattr(s.answers[i], attr)) for s in starts))
        out.append(TurnTokens(f"{answer.label} ({answer.knowledge})", med("prompt_tokens"),
                              med("prompt_eval_tokens"), med("completion_tokens")))
    return out


def report(starts: list[Start], prefix_tokens: int, prefix_files: int, prefix_bytes: int) -> list[str]:
    lines = ["Cold start on this machine (medians):", "", *start_rows(starts), "", *each_start_rows(starts), "",
             f"stored prefix states: {prefix_files} files, {prefix_bytes / 1e6:.1f} MB; the model reads "
             f"{prefix_tokens} tokens to build them all", "",
             "Projection (published rates: Pi 5 174 / 34 tokens/s prompt / decode at 2 threads, Pi 4 25 / 9.5):", "",
             *projection_rows(turn_tokens(starts)), "", *startup_rows(prefix_tokens)]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from daemon.settings import Settings

    d = Settings()
    p = argparse.ArgumentParser(prog="python -m bench.bench_coldstart", description=__doc__)
    p.add_argument("--model", type=Path, default=None, help="GGUF file (default: what `kioskd pull` prints)")
    p.add_argument("--venue", default=str(ROOT / "bench" / "venue"),
                   help="knowledge folder (grounded prefixes); '' for none")
    p.add_argument("--repeats", type=int, default=3, help="starts of each kind, alternating")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--threads-batch", type=int, default=d.threads_batch)
    p.add_argument("--quiet-wait", type=float, default=30.0, help="seconds to wait for an idle machine per start")
    p.add_argument("--ready-limit", type=float, default=900.0, help="seconds a start may take to READY=1")
    p.add_argument("--prime", action="store_true",
                   help="one untimed start first (else the first start also builds the knowledge index)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    # What bench_daemon's daemon_command passes: the daemon's own defaults.
    args.n_ctx, args.n_batch, args.tokens = d.n_ctx, d.n_batch, d.max_tokens
    args.top_k, args.top_p, args.repeat_penalty = d.top_k, d.top_p, d.repeat_penalty
    args.venue = Path(args.venue) if args.venue else None
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.model = args.model or default_model()
    env_before = environment()
    with tempfile.TemporaryDirectory(prefix="kioskd-coldstart-") as tmp:
        state_dir = Path(tmp)
        if args.prime:
            measure_start(args, NO_STATES, state_dir)  # untimed: builds the knowledge index, warms the page cache
        starts = [measure_start(args, kind, state_dir) for _ in range(args.repeats) for kind in (NO_STATES, STATES)]
        prefixes = stored_prefixes(state_dir / "prefixes")
        size = sum(p.stat().st_size for p in (state_dir / "prefixes").glob("*.kvstate"))
    lines = report(starts, prefix_tree_tokens(prefixes), len(prefixes), size)
    lines.append(f"load average before: {env_before['loadavg']}, after: {_loadavg()}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        result = {"args": {k: str(v) for k, v in vars(args).items()}, "environment": env_before,
                  "starts": [asdict(s) for s in starts], "report": lines}
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
