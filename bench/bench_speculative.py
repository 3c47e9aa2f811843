"""kioskd's n-gram speculative decoding against llama.cpp's llama-server, in one run on one GGUF.

Targets, all started once and kept running (each idles while another answers): two `kioskd serve` daemons
(engine local, own ports and state directories), one with `speculative_decoding` on and one with it off; a plain
llama-server; and one llama-server per n-gram mode of its own (`--spec-type ngram-simple`, `ngram-map-k`,
`ngram-mod`, `ngram-cache`, its defaults). Same threads (2), context, batch size, flash attention off, one slot,
temperature 0, top-k/top-p, repeat penalty and max_tokens everywhere.

Two prompt sets: (a) ordinary open-ended questions (bench_daemon's), (b) venue text in the question with a task
that quotes it: list, repeat, copy, reformat. For every prompt each target answers once, one client, one request
at a time, the order of the targets rotating per prompt, and before every request the bench waits for the
machine to be quiet (never two models computing at once). Decode tokens/s is the client's, from SSE:
(tokens - 1) / (last text - first text), tokens exact from `usage`. The daemons' /metrics counters before and
after each set give the acceptance rate (accepted / proposed) and tokens per verification batch
((accepted + batches) / batches).

Targets (issue 19): decode ratio daemon (speculation on) / llama-server plain, median per prompt, >= 1.0 on (a)
and >= 1.3 on (b). Exit status 0 when both are met, 1 when not, 2 when the daemon has no speculative setting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import bench_daemon
from bench.bench_daemon import WARMUP_PROMPT, Run, Timer, free_port, prompts, timed_answer, wait_quiet, wait_ready
from tests.llama_server import CONTEXT_PER_SLOT, THREADS, LlamaServer, llama_server_binary

_LOGGER = logging.getLogger("bench")

TARGET_RATIO = {"a": 1.0, "b": 1.3}
SPEC_ON, SPEC_OFF, PLAIN = "kioskd spec on", "kioskd spec off", "llama-server"
SERVER_SPECS = ("ngram-simple", "ngram-map-k", "ngram-mod", "ngram-cache")
COUNTERS = ("proposed", "accepted", "batches")
METRIC = {"proposed": "kioskd_speculative_proposed_tokens_total",
          "accepted": "kioskd_speculative_accepted_tokens_total",
          "batches": "kioskd_speculative_batches_total"}
VENUE = Path(__file__).resolve().parent / "venue" / "en"
KIOSK_SYSTEM = ("You are the information kiosk of a public library. Answer the visitor from the venue text they "
                "give you, exactly as it is written there.")
VENUE_TASKS = (
    ("hours.md", "List the opening hours from this text, one line per day."),
    ("contact.md", "Repeat the address, the phone number and the e-mail address exactly as written in this text."),
    ("borrowing.md", "Rewrite this text as bullet points, keeping every number."),
    ("printing.md", "Copy the first paragraph of this text word for word."),
    ("returns.md", "What do I pay if I lose a book, and do I get anything back? Quote the sentences that say so."),
    ("building.md", "Rewrite the floor guide as a list with one bullet per level, keeping everything on each level."),
    ("card.md", "Reformat this text as a short FAQ: each question in bold, then its answer copied from the text."),
    ("services.md", "Repeat this text exactly, without the headings."),
)
DISTURBED_PCT = 25.0
"""A request during which other processes used more of the machine's CPU than this is counted as disturbed."""
SETS = {"a": "ordinary questions", "b": "answers from or repeating given text"}


@dataclass(frozen=True)
class Target:
    """One OpenAI endpoint: a daemon (its /metrics has the speculative counters) or a llama-server."""

    name: str
    base_url: str
    pid: int
    daemon: bool


@dataclass(frozen=True)
class Question:
    system: str
    user: str


def venue_text(filename: str) -> str:
    """A venue file without its `Keywords:` lines (those are for retrieval, not for visitors)."""
    lines = (VENUE / filename).read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("Keywords:")).strip()


def question_set(name: str, runs: int) -> list[Question]:
    if name == "a":
        return [Question(bench_daemon.SYSTEM_PROMPT, p) for p in prompts(runs)]
    out = []
    for i in range(runs):
        filename, task = VENUE_TASKS[i % len(VENUE_TASKS)]
        version = f" (version {i // len(VENUE_TASKS) + 1})" if i >= len(VENUE_TASKS) else ""
        out.append(Question(KIOSK_SYSTEM, f"Venue text:\n\n{venue_text(filename)}\n\n{task}{version}"))
    return out


def body(target: Target, args: argparse.Namespace, question: Question, max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "messages": [{"role": "system", "content": question.system}, {"role": "user", "content": question.user}],
        "stream": True, "stream_options": {"include_usage": True}, "max_tokens": max_tokens, "temperature": 0,
        "top_k": args.top_k, "top_p": args.top_p}
    if not target.daemon:  # The daemon refuses repeat_penalty in a request: its setting is the same value.
        out["repeat_penalty"] = args.repeat_penalty
    return out


async def stream_run(session: aiohttp.ClientSession, target: Target, args: argparse.Namespace, question: Question,
                     max_tokens: int) -> Run:
    await asyncio.to_thread(wait_quiet, args.quiet_wait)
    timer = Timer(("self", target.pid))
    async with session.post(f"{target.base_url}/v1/chat/completions",
                            json=body(target, args, question, max_tokens)) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {resp.status}: {(await resp.text())[:500]}")
        return await timed_answer(resp, timer, question.user)


async def counters(session: aiohttp.ClientSession, target: Target) -> dict[str, float]:
    """The daemon's speculative counters now (0 for one it does not export)."""
    async with session.get(f"{target.base_url}/metrics") as resp:
        resp.raise_for_status()
        text = await resp.text()
    out = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for key, metric in METRIC.items():
            if re.fullmatch(re.escape(metric) + r"(\{.*\})?", name):
                out[key] += float(value.split()[0])
    return out


async def measure_set(session: aiohttp.ClientSession, targets: list[Target], args: argparse.Namespace,
                      questions: list[Question], offset: int) -> tuple[dict[str, list[Run]], dict[str, Any]]:
    """Every question to every target, the targets' order rotating per question; the daemons' counter deltas."""
    daemons = [t for t in targets if t.daemon]
    before = {t.name: await counters(session, t) for t in daemons}
    runs: dict[str, list[Run]] = {t.name: [] for t in targets}
    for index, question in enumerate(questions):
        shift = (index + offset) % len(targets)
        for target in targets[shift:] + targets[:shift]:
            runs[target.name].append(await stream_run(session, target, args, question, args.tokens))
        _LOGGER.info("question %d of %d: %s", index + 1, len(questions),
                     ", ".join(f"{n} {r[-1].decode_tps:.1f}" for n, r in runs.items()))
    after = {t.name: await counters(session, t) for t in daemons}
    deltas = {name: {k: after[name][k] - before[name][k] for k in COUNTERS} for name in before}
    return runs, deltas


async def measure(args: argparse.Namespace, targets: list[Target], procs: dict[str, subprocess.Popen[bytes]]
                  ) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for target in targets:
            if target.daemon:
                await wait_ready(session, target.base_url, procs[target.name], limit=300)
            await stream_run(session, target, args, Question(bench_daemon.SYSTEM_PROMPT, WARMUP_PROMPT), 8)
        results: dict[str, Any] = {s: {"runs": {t.name: [] for t in targets},
                                       "counters": {t.name: dict.fromkeys(COUNTERS, 0.0) for t in targets if t.daemon}}
                                   for s in args.sets}
        for cycle in range(args.cycles):
            for set_name in args.sets:
                _LOGGER.info("cycle %d of %d, set (%s) %s", cycle + 1, args.cycles, set_name, SETS[set_name])
                runs, deltas = await measure_set(session, targets, args, question_set(set_name, args.runs), cycle)
                for name, more in runs.items():
                    results[set_name]["runs"][name] += more
                for name, delta in deltas.items():
                    for key, value in delta.items():
                        results[set_name]["counters"][name][key] += value
                # Each set's figures as soon as it is done, in case the run is stopped before the end.
                done = summarize_set(set_name, results[set_name]["runs"], results[set_name]["counters"])
                _LOGGER.info("so far:\n%s", "\n".join(report_set(set_name, done)))
    return results


# ---- the processes ----

def server_variants(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """Target name -> llama-server flags. A spec is `TYPE` or `TYPE:flag=value,...` (e.g. ngram-simple:
    spec-ngram-simple-size-n=3)."""
    common = ("--cache-ram", "0", "--flash-attn", "off", "--batch-size", str(args.n_batch),
              "--ubatch-size", str(args.n_batch))
    out = {PLAIN: common}
    for spec in args.server_spec:
        kind, _, options = spec.partition(":")
        flags = [x for opt in filter(None, options.split(",")) for x in (f"--{opt.partition('=')[0]}",
                                                                           opt.partition("=")[2])]
        out[f"{PLAIN} {spec}"] = (*common, "--spec-type", kind, *flags)
    return out


def speculative_supported() -> bool:
    """Whether this tree's `kioskd serve` has the settings (it refuses unknown ones)."""
    helptext = subprocess.run([*daemon_base(), "serve", "--help"], capture_output=True, text=True, check=False)
    return "--speculative-decoding" in helptext.stdout and "--speculative-max-draft" in helptext.stdout


def daemon_base() -> list[str]:
    exe = Path(sys.executable).with_name("kioskd")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "daemon"]


def daemon_command(args: argparse.Namespace, port: int, workdir: Path, speculative: bool) -> list[str]:
    workdir.mkdir()
    # bench_daemon's flags: model, threads, context, batch, sampling, max_tokens, no question length limit.
    cmd = [*bench_daemon.daemon_command(args, port, workdir), "--voice", "false",
           "--speculative-decoding", str(speculative).lower()]
    return cmd + (["--speculative-max-draft", str(args.max_draft)] if speculative and args.max_draft else [])


@contextlib.contextmanager
def started(args: argparse.Namespace) -> Iterator[tuple[list[Target], dict[str, subprocess.Popen[bytes]]]]:
    """Every llama-server (healthy when this yields) and both daemons (maybe still loading)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
    targets, procs = [], {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kioskd-bench-spec-")))
        for name, flags in server_variants(args).items():
            _LOGGER.info("starting %s: %s", name, " ".join(flags))
            server = LlamaServer(args.model, parallel=1, extra=flags)
            stack.callback(server.log_path.unlink, missing_ok=True)
            stack.callback(server.stop)  # Before start(): a stop while it loads must not leave it running.
            server.start()
            targets.append(Target(name, server.origin, server.pid, daemon=False))
        for name, speculative in ((SPEC_ON, True), (SPEC_OFF, False)):
            port, workdir = free_port(), tmp / name.replace(" ", "-")
            cmd = daemon_command(args, port, workdir, speculative)
            _LOGGER.info("starting %s", " ".join(cmd))
            with (tmp / f"{workdir.name}.log").open("wb") as log:
                procs[name] = proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            stack.callback(_stop, proc)
            targets.append(Target(name, f"http://127.0.0.1:{port}", proc.pid, daemon=True))
        try:
            yield targets, procs
        except Exception:
            for log in sorted(tmp.glob("*.log")):
                sys.stderr.write(f"--- {log.name}\n{log.read_text()[-3000:]}\n")
            raise


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- summary and report ----

def _median(runs: Sequence[Run], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in runs) if runs else 0.0


def paired_ratio(mine: Sequence[Run], theirs: Sequence[Run]) -> float:
    """Median over the prompts of my decode tokens/s over theirs (answers of one token have no decode rate)."""
    ratios = [m.decode_tps / t.decode_tps for m, t in zip(mine, theirs, strict=True) if m.decode_tps and t.decode_tps]
    return statistics.median(ratios) if ratios else 0.0


def same_text(mine: Sequence[Run], theirs: Sequence[Run]) -> dict[str, Any]:
    differ = [i for i, (m, t) in enumerate(zip(mine, theirs, strict=True)) if m.text != t.text]
    return {"same": len(mine) - len(differ), "of": len(mine), "differ_at": differ}


def row(runs: Sequence[Run], spec: dict[str, float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ttft_ms": round(_median(runs, "ttft_ms"), 1), "decode_tps": round(_median(runs, "decode_tps"), 2),
        "tokens": _median(runs, "tokens"), "early_stops": sum(r.finish != "length" for r in runs),
        "other_cpu_pct": _median(runs, "other_cpu_pct"),
        "disturbed": sum(r.other_cpu_pct > DISTURBED_PCT for r in runs), "runs": len(runs)}
    if spec is not None:
        out.update({k: int(v) for k, v in spec.items()})
        out["acceptance"] = round(spec["accepted"] / spec["proposed"], 3) if spec["proposed"] else None
        out["tokens_per_batch"] = (round((spec["accepted"] + spec["batches"]) / spec["batches"], 2)
                                   if spec["batches"] else None)
    return out


def summarize_set(name: str, runs: dict[str, list[Run]], spec: dict[str, dict[str, float]]) -> dict[str, Any]:
    rows = {target: row(r, spec.get(target)) for target, r in runs.items()}
    ngram = [t for t in runs if t.startswith(f"{PLAIN} ")]
    best = max(ngram, key=lambda t: rows[t]["decode_tps"], default=None)
    on, off, plain = runs[SPEC_ON], runs[SPEC_OFF], runs[PLAIN]
    ratio = paired_ratio(on, plain)
    return {
        "rows": rows, "best_ngram": best,
        "ratio_on_plain": round(ratio, 3), "pass": ratio >= TARGET_RATIO[name],
        "ratio_on_best_ngram": round(paired_ratio(on, runs[best]), 3) if best else None,
        "ratio_off_plain": round(paired_ratio(off, plain), 3), "ratio_on_off": round(paired_ratio(on, off), 3),
        "ratio_best_ngram_plain": round(paired_ratio(runs[best], plain), 3) if best else None,
        "same_on_off": same_text(on, off), "same_on_plain": same_text(on, plain),
        "same_off_plain": same_text(off, plain)}


def report_set(name: str, s: dict[str, Any]) -> Iterator[str]:
    yield f"({name}) {SETS[name]}"
    yield (f"  {'target':<34} {'TTFT ms':>8} {'decode tok/s':>12} {'tokens':>6} {'EOS':>4} {'accepted':>9} "
           f"{'tok/batch':>9} {'other CPU %':>11}")
    for target, r in s["rows"].items():
        accept = "-" if r.get("acceptance") is None else f"{r['acceptance']:.3f}"
        per_batch = "-" if r.get("tokens_per_batch") is None else f"{r['tokens_per_batch']:.2f}"
        yield (f"  {target:<34} {r['ttft_ms']:>8.1f} {r['decode_tps']:>12.2f} {r['tokens']:>6.0f} "
               f"{r['early_stops']:>4} {accept:>9} {per_batch:>9} {r['other_cpu_pct']:>11.1f}")
    disturbed = sum(r["disturbed"] for r in s["rows"].values())
    if disturbed:
        yield (f"  {disturbed} of {sum(r['runs'] for r in s['rows'].values())} requests ran while other processes "
               f"used more than {DISTURBED_PCT:.0f} % of the CPU: a figure from a busy machine")
    verdict = "PASS" if s["pass"] else "FAIL"
    yield (f"  decode ratio kioskd spec on / llama-server: {s['ratio_on_plain']:.3f} "
           f"(>= {TARGET_RATIO[name]}: {verdict})")
    if s["best_ngram"]:
        winner = "kioskd" if s["ratio_on_best_ngram"] >= 1.0 else "llama-server"
        yield (f"  decode ratio kioskd spec on / {s['best_ngram']} (its best n-gram mode here): "
               f"{s['ratio_on_best_ngram']:.3f}, {winner} wins; that mode / plain llama-server "
               f"{s['ratio_best_ngram_plain']:.3f}")
    yield f"  kioskd spec off / llama-server: {s['ratio_off_plain']:.3f}; kioskd on / off: {s['ratio_on_off']:.3f}"
    for key, label in (("same_on_off", "spec on as spec off"), ("same_on_plain", "spec on as llama-server"),
                       ("same_off_plain", "spec off as llama-server")):
        same = s[key]
        differ = f" (differ at prompts {same['differ_at']})" if same["differ_at"] else ""
        yield f"  same text, {label}: {same['same']}/{same['of']}{differ}"


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    _LOGGER.info("llama-server: %s", llama_server_binary())
    with started(args) as (targets, procs):
        results = asyncio.run(measure(args, targets, procs))
    summary = {s: summarize_set(s, results[s]["runs"], results[s]["counters"]) for s in args.sets}
    return summary, results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_speculative", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="GGUF model file every target serves")
    p.add_argument("--tokens", type=int, default=128, help="max_tokens of every answer")
    p.add_argument("--runs", type=int, default=6, help="prompts per set (each asked of every target)")
    p.add_argument("--cycles", type=int, default=1,
                   help="times the prompt sets are asked (from the second on, drafters that remember earlier "
                        "answers see the same question again)")
    p.add_argument("--sets", default="a,b", help="prompt sets to ask, in this order (both: the verdict)")
    p.add_argument("--max-draft", type=int, default=0, help="the daemon's speculative_max_draft (0: its default)")
    p.add_argument("--server-spec", action="append", default=None,
                   help="a llama-server n-gram mode to try, TYPE or TYPE:flag=value,... (repeatable; default: "
                        f"{', '.join(SERVER_SPECS)})")
    p.add_argument("--n-batch", type=int, default=256, help="prompt batch size of every target (the daemon's default)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repeat-penalty", type=float, default=1.0,
                   help="llama-server's default; the daemon is started with it (its own default is 1.1)")
    p.add_argument("--quiet-wait", type=float, default=20.0,
                   help="before each request wait up to this many seconds for the machine to be idle (0: never)")
    p.add_argument("--json", type=Path, default=None, help="also write the results (answers included) to this file")
    args = p.parse_args(argv)
    args.server_spec = args.server_spec or list(SERVER_SPECS)
    args.sets = [s for s in args.sets.split(",") if s]
    if not args.sets or set(args.sets) - set(SETS):
        p.error(f"--sets takes a comma-separated list of {', '.join(SETS)}")
    # What bench_daemon.daemon_command reads: the same threads and context as every llama-server slot.
    args.threads = args.threads_batch = THREADS
    args.n_ctx = CONTEXT_PER_SLOT
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C, so every server and daemon started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not speculative_supported():
        sys.stderr.write("this kioskd has no speculative_decoding / speculative_max_draft settings\n")
        return 2
    load_before = os.getloadavg()
    summary, results = run(args)
    lines = [line for s in args.sets for line in [*report_set(s, summary[s]), ""]]
    lines.append(f"load average (1/5/15 min) before: {tuple(round(x, 2) for x in load_before)}, "
                 f"after: {tuple(round(x, 2) for x in os.getloadavg())}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        runs = {s: {t: [asdict(r) for r in rs] for t, rs in results[s]["runs"].items()} for s in args.sets}
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                         "runs": runs}, indent=2, ensure_ascii=False))
    return 0 if all(s in summary and summary[s]["pass"] for s in SETS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
