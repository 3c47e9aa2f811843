"""kioskd's upstream engine against the upstream alone, in one run: llama.cpp's llama-server on loopback serving
one GGUF, asked directly and through a kioskd daemon (engine=upstream, no local model) pointed at it.

(a) decode tokens/s and (b) time to first token, both measured here, the client, over streaming SSE: for every
prompt one request direct and one through the daemon, in alternating order (direct first, then daemon first),
same messages, temperature 0, same max_tokens. The server runs with no prompt cache in RAM and picks the least
recently used slot, so the second request of a pair does not find the first one's prompt cached: both evaluate
the same suffix after the shared system prompt.
(c) N clients at once through the daemon (upstream_parallel N, llama-server --parallel N, the upstream batching
them) and, for reference, N at once direct: aggregate tokens/s against one client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.bench_daemon import (
    SYSTEM_PROMPT,
    WARMUP_PROMPT,
    Run,
    Timer,
    free_port,
    messages,
    prompts,
    timed_answer,
    wait_quiet,
    wait_ready,
)
from tests.llama_server import LlamaServer, llama_server_binary

_LOGGER = logging.getLogger("bench")

TARGET_DECODE_RATIO, TARGET_TTFT_OVERHEAD_MS = 0.97, 20.0
DIRECT, DAEMON = "upstream alone", "through kioskd"
# No prompt cache in RAM, least recently used slot: a repeated prompt is evaluated again, not restored.
SERVER_FLAGS = ("--cache-ram", "0", "--slot-prompt-similarity", "0")


@dataclass(frozen=True)
class Target:
    """One OpenAI endpoint and the processes whose CPU counts as ours while it answers."""

    name: str
    base_url: str
    pids: tuple[int | str, ...]


WARMUP_TOKENS = 8


def body(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    # What the upstream engine itself sends (daemon/upstream/wire.py), so both paths ask the same of the server.
    tokens = WARMUP_TOKENS if prompt == WARMUP_PROMPT else args.tokens
    return {"messages": messages(prompt), "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": tokens, "temperature": 0, "top_p": args.top_p}


async def stream_run(session: aiohttp.ClientSession, target: Target, args: argparse.Namespace, prompt: str,
                     quiet: bool = True) -> Run:
    if quiet:
        await asyncio.to_thread(wait_quiet, args.quiet_wait)
    timer = Timer(target.pids)
    async with session.post(f"{target.base_url}/chat/completions", json=body(args, prompt)) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {resp.status}: {(await resp.text())[:500]}")
        return await timed_answer(resp, timer, prompt)


async def paired_runs(session: aiohttp.ClientSession, direct: Target, daemon: Target, args: argparse.Namespace,
                      user_prompts: list[str]) -> dict[str, list[Run]]:
    """Each prompt direct and through the daemon, the order alternating so neither path always goes first."""
    runs: dict[str, list[Run]] = {DIRECT: [], DAEMON: []}
    for index, prompt in enumerate(user_prompts):
        order = (direct, daemon) if index % 2 == 0 else (daemon, direct)
        for target in order:
            runs[target.name].append(await stream_run(session, target, args, prompt))
    return runs


async def concurrent_runs(session: aiohttp.ClientSession, target: Target, args: argparse.Namespace,
                          user_prompts: list[str]) -> tuple[list[Run], float]:
    """All prompts at once; the runs and the wall time from the first request sent to the last answer done."""
    await asyncio.to_thread(wait_quiet, args.quiet_wait)
    started = time.perf_counter()
    runs = await asyncio.gather(*(stream_run(session, target, args, p, quiet=False) for p in user_prompts))
    return list(runs), time.perf_counter() - started


def daemon_command(args: argparse.Namespace, upstream_url: str, port: int, workdir: Path) -> list[str]:
    exe = Path(sys.executable).with_name("kioskd")
    base = [str(exe)] if exe.is_file() else [sys.executable, "-m", "daemon"]
    config = workdir / "config.toml"
    config.write_text("")  # Isolate from /etc/kioskd/config.toml.
    flags = {"config": config, "state-dir": workdir, "host": "127.0.0.1", "port": port, "engine": "upstream",
             "upstream-url": upstream_url, "upstream-parallel": args.parallel, "upstream-fallback": "false",
             "queue-size": 2 * args.parallel, "system-prompt": SYSTEM_PROMPT, "temperature": 0,
             "max-tokens": args.tokens, "top-p": args.top_p, "voice": "false", "log-level": "warning"}
    return [*base, "serve", *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]


async def measure(args: argparse.Namespace, server: LlamaServer, daemon: subprocess.Popen[bytes],
                  daemon_url: str) -> dict[str, Any]:
    direct = Target(DIRECT, server.url, ("self", server.pid))
    through = Target(DAEMON, f"{daemon_url}/v1", ("self", daemon.pid, server.pid))
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await wait_ready(session, daemon_url, daemon, limit=120)
        # Warm-up: every slot has the system prompt and both paths have made their connections.
        await concurrent_runs(session, direct, args, [WARMUP_PROMPT] * args.parallel)
        await stream_run(session, through, args, WARMUP_PROMPT)
        user_prompts = prompts(args.runs)
        paired: dict[str, list[Run]] = {DIRECT: [], DAEMON: []}
        for cycle in range(args.cycles):
            _LOGGER.info("paired requests, cycle %d of %d", cycle + 1, args.cycles)
            for name, runs in (await paired_runs(session, direct, through, args, user_prompts)).items():
                paired[name] += runs
        _LOGGER.info("%d clients at once, direct then through the daemon", args.parallel)
        many = prompts(args.parallel)
        crowd = {DIRECT: await concurrent_runs(session, direct, args, many),
                 DAEMON: await concurrent_runs(session, through, args, many)}
    return summarize(paired, crowd)


def _median(runs: Sequence[Run], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in runs)


def summarize(paired: dict[str, list[Run]], crowd: dict[str, tuple[list[Run], float]]) -> dict[str, Any]:
    direct, daemon = paired[DIRECT], paired[DAEMON]
    # Per prompt (each pair ran the same prompt back to back, so drift of the machine hits both), then the median.
    decode_ratio = statistics.median(d.decode_tps / u.decode_tps for d, u in zip(daemon, direct, strict=True))
    overhead = statistics.median(d.ttft_ms - u.ttft_ms for d, u in zip(daemon, direct, strict=True))
    out: dict[str, Any] = {
        "paths": {name: {"ttft_ms": round(_median(runs, "ttft_ms"), 2),
                         "decode_tps": round(_median(runs, "decode_tps"), 2),
                         "tokens": _median(runs, "tokens"), "other_cpu_pct": _median(runs, "other_cpu_pct"),
                         "early_stops": sum(r.finish != "length" for r in runs)} for name, runs in paired.items()},
        "decode_ratio": round(decode_ratio, 4), "decode_pass": decode_ratio >= TARGET_DECODE_RATIO,
        "ttft_overhead_ms": round(overhead, 2), "ttft_pass": overhead <= TARGET_TTFT_OVERHEAD_MS,
        "same_text": f"{sum(d.text == u.text for d, u in zip(daemon, direct, strict=True))}/{len(direct)}",
        "concurrent": {},
    }
    for name, (runs, wall) in crowd.items():
        single = _median(paired[name], "decode_tps")
        aggregate = sum(r.tokens for r in runs) / wall
        out["concurrent"][name] = {
            "clients": len(runs), "wall_s": round(wall, 2), "tokens": sum(r.tokens for r in runs),
            "aggregate_tps": round(aggregate, 2), "single_client_tps": round(single, 2),
            "speedup": round(aggregate / single, 2), "per_client_decode_tps": round(_median(runs, "decode_tps"), 2),
            "ttft_ms_median": round(_median(runs, "ttft_ms"), 1), "ttft_ms_max": round(max(r.ttft_ms for r in runs), 1)}
    return out


def report(summary: dict[str, Any]) -> list[str]:
    lines = [f"{'path':<16} {'TTFT ms':>8} {'decode tok/s':>13} {'tokens':>7} {'early stop':>10} {'other CPU %':>11}"]
    for name, p in summary["paths"].items():
        lines.append(f"{name:<16} {p['ttft_ms']:>8.1f} {p['decode_tps']:>13.2f} {p['tokens']:>7.0f} "
                     f"{p['early_stops']:>10} {p['other_cpu_pct']:>11.1f}")
    lines += [
        f"decode ratio (through kioskd / alone, median per prompt): {summary['decode_ratio']:.3f} "
        f"(>= {TARGET_DECODE_RATIO}: {_verdict(summary['decode_pass'])})",
        f"TTFT overhead (median per prompt): {summary['ttft_overhead_ms']:+.1f} ms "
        f"(<= {TARGET_TTFT_OVERHEAD_MS:.0f}: {_verdict(summary['ttft_pass'])})",
        f"same text through kioskd as alone: {summary['same_text']}", ""]
    for name, c in summary["concurrent"].items():
        lines.append(f"{c['clients']} clients at once, {name}: {c['aggregate_tps']:.2f} tok/s aggregate "
                     f"({c['tokens']} tokens in {c['wall_s']:.1f} s) = {c['speedup']:.2f}x one client's "
                     f"{c['single_client_tps']:.2f}; per client {c['per_client_decode_tps']:.2f} tok/s, "
                     f"TTFT median {c['ttft_ms_median']:.0f} ms, max {c['ttft_ms_max']:.0f} ms")
    return lines


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
    _LOGGER.info("llama-server: %s", llama_server_binary())
    with LlamaServer(args.model, parallel=args.parallel, extra=SERVER_FLAGS) as server, \
            tempfile.TemporaryDirectory(prefix="kioskd-bench-") as tmp:
        port, log = free_port(), Path(tmp) / "kioskd.log"
        cmd = daemon_command(args, server.url, port, Path(tmp))
        _LOGGER.info("starting %s", " ".join(cmd))
        with log.open("wb") as out:
            daemon = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            return asyncio.run(measure(args, server, daemon, f"http://127.0.0.1:{port}"))
        except Exception:
            sys.stderr.write(log.read_text()[-4000:] + server.log()[-4000:])
            raise
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_upstream", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="GGUF model file the llama-server serves")
    p.add_argument("--tokens", type=int, default=128, help="max_tokens of every answer")
    p.add_argument("--runs", type=int, default=6, help="prompts per cycle (each asked direct and through kioskd)")
    p.add_argument("--cycles", type=int, default=1, help="times the paired prompts are asked")
    p.add_argument("--parallel", type=int, default=8,
                   help="llama-server slots, the daemon's upstream_parallel and the clients at once")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="before each request wait up to this many seconds for the machine to be idle (0: never)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    load_before = os.getloadavg()
    summary = run(args)
    lines = report(summary)
    lines.append(f"load average (1/5/15 min) before: {tuple(round(x, 2) for x in load_before)}, "
                 f"after: {tuple(round(x, 2) for x in os.getloadavg())}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary},
                                        indent=2))
    return 0 if summary["decode_pass"] and summary["ttft_pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
