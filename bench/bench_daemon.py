"""Raw llama-cpp-python against the daemon (SSE and WebSocket) on one model, prompt set and token budget.

Order of the blocks (one model in memory at a time): raw 1, daemon SSE 1, daemon WS 1, raw 2 (and with
--cycles N: ... daemon SSE N, daemon WS N, raw N+1). Every block makes one warm-up request and then one request
per prompt of the same prompt list, so each measured request evaluates a comparable prompt suffix after the shared
system-prompt prefix in the KV cache. Each path's figure is the mean of its blocks' medians; the raw blocks
bracket the daemon blocks, which cancels slow drift of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

_LOGGER = logging.getLogger("bench")

SYSTEM_PROMPT = "You are a creative writer. Always answer at length, with rich detail."
WARMUP_PROMPT = "Write a long, detailed story about a lighthouse keeper."
TOPICS = ("a clockmaker in Prague", "a fox who learns to read", "a train that never stops", "the last bakery on Mars",
          "a girl and her kite", "a robot gardener", "a storm over the harbour", "a forgotten library",
          "two rival chess players", "a journey across the desert")
TARGET_DECODE_RATIO, TARGET_TTFT_MS, TARGET_RSS_MB = 0.97, 30.0, 800.0
RAW, SSE, WS = "raw", "daemon SSE", "daemon WS"


@dataclass
class Run:
    prompt: str
    ttft_ms: float
    decode_tps: float
    tokens: int
    finish: str
    text: str = field(repr=False)
    other_cpu_pct: float = 0.0
    server: dict[str, Any] = field(default_factory=dict)


@dataclass
class Block:
    path: str
    cycle: int
    runs: list[Run]
    memory: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path} {self.cycle}"

    def median(self, attr: str) -> float:
        """The median of one Run field (ttft_ms, decode_tps, tokens, other_cpu_pct) over the block."""
        return statistics.median(float(getattr(r, attr)) for r in self.runs)


def prompts(runs: int) -> list[str]:
    out = [f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}." for i in range(runs)]
    return [p if i < len(TOPICS) else f"{p[:-1]} (version {i // len(TOPICS) + 1})." for i, p in enumerate(out)]


def messages(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def proc_memory(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of a process in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def _system_busy() -> tuple[int, int]:
    """Busy (steal included) and total jiffies of the whole machine."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)


def _jiffies(pid: int | str) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_quiet(limit: float, threshold: float = 0.08) -> None:
    """Wait (at most `limit` s) for a 1 s window in which the machine is less than `threshold` busy."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        b0, t0 = _system_busy()
        time.sleep(1.0)
        b1, t1 = _system_busy()
        if t1 > t0 and (b1 - b0) / (t1 - t0) < threshold:
            return
    if limit > 0:
        _LOGGER.warning("the machine did not become quiet within %.0f s; measuring anyway", limit)


class Timer:
    """Collects the arrival time of each text piece of one answer, and the CPU that other processes used."""

    def __init__(self, pids: tuple[int | str, ...] = ("self",)) -> None:
        self._pids = pids
        self._cpu = self._cpu_sample()
        self.start = time.perf_counter()
        self.first = self.last = 0.0
        self.pieces: list[str] = []

    def piece(self, text: str) -> None:
        if not text:
            return
        now = time.perf_counter()
        if not self.pieces:
            self.first = now
        self.last = now
        self.pieces.append(text)

    def _cpu_sample(self) -> tuple[int, int, int]:
        return *_system_busy(), sum(_jiffies(p) for p in self._pids)

    def other_cpu_pct(self) -> float:
        """Machine CPU (of all cores) used by processes other than ours while the answer ran."""
        busy, total, ours = (a - b for a, b in zip(self._cpu_sample(), self._cpu, strict=True))
        return round(max(0.0, 100 * (busy - ours) / total), 1) if total else 0.0

    def run(self, prompt: str, tokens: int, finish: str, server: dict[str, Any] | None = None) -> Run:
        span = self.last - self.first
        tps = (tokens - 1) / span if tokens > 1 and span > 0 else 0.0
        return Run(prompt, round((self.first - self.start) * 1000, 2), round(tps, 2), tokens, finish,
                   "".join(self.pieces), self.other_cpu_pct(), server or {})


# ---- raw llama-cpp-python ----

def raw_block(args: argparse.Namespace, cycle: int, user_prompts: list[str]) -> Block:
    from llama_cpp import Llama

    llm = Llama(model_path=str(args.model), n_ctx=args.n_ctx, n_batch=args.n_batch, n_threads=args.threads,
                n_threads_batch=args.threads_batch, use_mmap=True, verbose=False)
    try:
        runs = [raw_run(llm, args, p) for p in [WARMUP_PROMPT, *user_prompts]][1:]
        memory = proc_memory()
    finally:
        llm.close()
    return Block(RAW, cycle, runs, memory)


def raw_run(llm: Any, args: argparse.Namespace, prompt: str) -> Run:
    wait_quiet(args.quiet_wait)
    timer, finish = Timer(), "?"
    stream = llm.create_chat_completion(messages=messages(prompt), stream=True, temperature=0.0,
                                        max_tokens=args.tokens, top_k=args.top_k, top_p=args.top_p,
                                        repeat_penalty=args.repeat_penalty)
    for chunk in stream:
        choice = chunk["choices"][0]
        timer.piece(choice["delta"].get("content") or "")
        finish = choice.get("finish_reason") or finish
    if finish == "length":  # create_completion stops exactly at max_tokens.
        return timer.run(prompt, args.tokens, finish)
    # Stopped at EOS: every answer token (the EOS excluded) was evaluated and sits after the prompt in the context.
    prompt_tokens = len(llm.tokenize(render(llm, prompt).encode(), add_bos=False, special=True))
    return timer.run(prompt, llm.n_tokens - prompt_tokens, finish)


def render(llm: Any, prompt: str) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model = llm._model
    formatter = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"],
                                    eos_token=model.token_get_text(llm.token_eos()),
                                    bos_token=model.token_get_text(llm.token_bos()))
    turns: list[Any] = messages(prompt)
    return str(formatter(messages=turns).prompt)


# ---- the daemon ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_command(args: argparse.Namespace, port: int, workdir: Path) -> list[str]:
    exe = Path(sys.executable).with_name("kioskd")
    base = [str(exe)] if exe.is_file() else [sys.executable, "-m", "daemon"]
    config = workdir / "config.toml"
    config.write_text("")  # Isolate from /etc/kioskd/config.toml.
    flags = {"config": config, "state-dir": workdir, "model": args.model, "host": "127.0.0.1", "port": port,
             "threads": args.threads, "threads-batch": args.threads_batch, "n-ctx": args.n_ctx,
             "n-batch": args.n_batch, "system-prompt": SYSTEM_PROMPT, "temperature": 0, "max-tokens": args.tokens,
             "top-k": args.top_k, "top-p": args.top_p, "repeat-penalty": args.repeat_penalty,
             "log-level": "warning", "max-question-chars": 1_000_000}  # the long-prompt run sends ~15k chars
    return [*base, "serve", *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes],
                     limit: float | None = None) -> float:
    """Seconds until kioskd's /readyz says 200; RuntimeError when it exits first or `limit` seconds pass."""
    started = time.perf_counter()
    while proc.poll() is None:
        if limit is not None and time.perf_counter() - started > limit:
            raise RuntimeError(f"kioskd was not ready after {limit:.0f} s")
        try:
            async with session.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"kioskd exited with status {proc.returncode} before it was ready")


async def sse_run(session: aiohttp.ClientSession, url: str, args: argparse.Namespace, pid: int, prompt: str) -> Run:
    body = {"messages": messages(prompt), "stream": True, "temperature": 0, "max_tokens": args.tokens,
            "top_k": args.top_k, "top_p": args.top_p, "stream_options": {"include_usage": True}}
    await asyncio.to_thread(wait_quiet, args.quiet_wait)
    timer = Timer(("self", pid))
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        return await timed_answer(resp, timer, prompt)


async def timed_answer(resp: aiohttp.ClientResponse, timer: Timer, prompt: str) -> Run:
    """A streamed completion as a Run: each content delta timed, its finish reason and usage's token count."""
    finish, tokens, server = "?", 0, dict[str, Any]()
    async for chunk in sse_events(resp):
        for choice in chunk.get("choices") or []:
            timer.piece(choice["delta"].get("content") or "")
            finish = choice.get("finish_reason") or finish
        server = chunk.get("timings") or server
        tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
    return timer.run(prompt, tokens, finish, server)


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    async for line in resp.content:
        if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"daemon error event: {event['error']}")
            yield event


async def fill_context(session: aiohttp.ClientSession, url: str, args: argparse.Namespace, pid: int) -> Run:
    """One answer to a prompt that fills the context window: the worst case for the daemon's memory."""
    items = (args.n_ctx - args.tokens - 100) // 16  # An item is 13-16 tokens.
    text = " ".join(f"Item {i}: the kiosk sells tickets, maps and coffee." for i in range(items))
    return await sse_run(session, url, args, pid, f"Summarize this list. {text}")


async def ws_run(session: aiohttp.ClientSession, url: str, args: argparse.Namespace, pid: int, prompt: str) -> Run:
    await asyncio.to_thread(wait_quiet, args.quiet_wait)
    # A fresh connection per answer: an idle aiohttp client answers no pings, so the daemon's heartbeat would
    # close a connection kept open across a long quiet wait.
    async with session.ws_connect(f"{url}/ws") as ws:
        return await _ws_answer(ws, Timer(("self", pid)), prompt)


async def _ws_answer(ws: aiohttp.ClientWebSocketResponse, timer: Timer, prompt: str) -> Run:
    await ws.send_str(json.dumps({"type": "chat", "session": None, "text": prompt}))
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame["type"] == "token":
            timer.piece(frame["text"])
        elif frame["type"] == "done":
            return timer.run(prompt, frame["usage"]["completion_tokens"], frame["reason"], frame["timings"])
        elif frame["type"] == "error":
            raise RuntimeError(f"daemon error frame: {frame}")
    raise RuntimeError("the WebSocket closed before the 'done' frame")


def daemon_run(args: argparse.Namespace, cycle: int, user_prompts: list[str]) -> tuple[list[Block], dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
    with tempfile.TemporaryDirectory(prefix="kioskd-bench-") as tmp:
        port, log = free_port(), Path(tmp) / "kioskd.log"
        cmd = daemon_command(args, port, Path(tmp))
        _LOGGER.info("starting %s", " ".join(cmd))
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            order = [WARMUP_PROMPT, *user_prompts]
            return asyncio.run(measure_daemon(args, cycle, order, proc, f"http://127.0.0.1:{port}"))
        except Exception:
            sys.stderr.write(log.read_text()[-4000:])
            raise
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def measure_daemon(args: argparse.Namespace, cycle: int, order: list[str], proc: subprocess.Popen[bytes],
                         url: str) -> tuple[list[Block], dict[str, float]]:
    """Warm-up and measured requests over SSE, then over /ws; in cycle 1 also the full-context memory check."""
    pid = proc.pid
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600)) as session:
        _LOGGER.info("daemon ready after %.1f s", await wait_ready(session, url, proc))
        loaded = proc_memory(pid)
        _LOGGER.info("daemon loaded: %s", loaded)
        sse = Block(SSE, cycle, [await sse_run(session, url, args, pid, p) for p in order][1:], proc_memory(pid))
        ws = Block(WS, cycle, [await ws_run(session, url, args, pid, p) for p in order][1:], proc_memory(pid))
        if args.fill_context and cycle == 1:
            run = await fill_context(session, url, args, pid)
            loaded["full_context_prompt_tokens"] = run.server.get("prompt_eval_tokens", 0)
            loaded.update({f"full_context_{k}": v for k, v in proc_memory(pid).items()})
            _LOGGER.info("daemon memory after a full context: %s", loaded)
    return [sse, ws], loaded


# ---- report ----

def _path_mean(blocks: list[Block], path: str, attr: str) -> float:
    return statistics.fmean(b.median(attr) for b in blocks if b.path == path)


def summarize(blocks: list[Block], loaded: dict[str, float]) -> dict[str, Any]:
    raw_ttft, raw_tps = _path_mean(blocks, RAW, "ttft_ms"), _path_mean(blocks, RAW, "decode_tps")
    reference = blocks[0].runs
    out: dict[str, Any] = {"raw_ttft_ms": round(raw_ttft, 2), "raw_decode_tps": round(raw_tps, 2),
                           "daemon_rss_loaded_mb": loaded, "compare": {}}
    for path in (SSE, WS):
        ttft, tps = _path_mean(blocks, path, "ttft_ms"), _path_mean(blocks, path, "decode_tps")
        ratio, overhead = tps / raw_tps, ttft - raw_ttft
        pairs = [(r, ref) for b in blocks if b.path == path for r, ref in zip(b.runs, reference, strict=True)]
        # Client TTFT less the engine's own (from the worker thread's start): HTTP/WS, queueing and hand-offs.
        transport = statistics.fmean(statistics.median(r.ttft_ms - r.server["ttft_ms"] for r in b.runs)
                                     for b in blocks if b.path == path)
        out["compare"][path] = {"ttft_ms": round(ttft, 2), "decode_tps": round(tps, 2),
                                "transport_ttft_ms": round(transport, 2),
                                "decode_ratio": round(ratio, 4), "ttft_overhead_ms": round(overhead, 2),
                                "decode_pass": ratio >= TARGET_DECODE_RATIO, "ttft_pass": overhead <= TARGET_TTFT_MS,
                                "same_text_as_raw": f"{sum(r.text == ref.text for r, ref in pairs)}/{len(pairs)}"}
    daemon = [b for b in blocks if b.path != RAW]
    out["daemon_rss_mb"] = max(b.memory["VmRSS"] for b in daemon)
    out["daemon_hwm_mb"] = max(loaded.get("full_context_VmHWM", 0), *(b.memory["VmHWM"] for b in daemon))
    out["rss_pass"] = out["daemon_hwm_mb"] <= TARGET_RSS_MB
    return out


def table(blocks: list[Block], summary: dict[str, Any]) -> Iterator[str]:
    yield f"{'block':<13} {'TTFT ms':>8} {'decode tok/s':>13} {'tokens':>7} {'early stop':>10} " \
          f"{'server TTFT':>11} {'server tok/s':>12} {'RSS MB':>7} {'HWM MB':>7} {'other CPU %':>11}"
    for b in blocks:
        srv_ttft = _median([r.server.get("ttft_ms") for r in b.runs])
        srv_tps = _median([r.server.get("tokens_per_s") for r in b.runs])
        early = sum(r.finish != "length" for r in b.runs)
        yield (f"{b.name:<13} {b.median('ttft_ms'):>8.1f} {b.median('decode_tps'):>13.2f} {b.median('tokens'):>7.0f} "
               f"{early:>10} {srv_ttft:>11} {srv_tps:>12} {b.memory.get('VmRSS', 0):>7.0f} "
               f"{b.memory.get('VmHWM', 0):>7.0f} {b.median('other_cpu_pct'):>11.1f}")
    yield ""
    yield "per path (mean of the blocks' medians):"
    yield f"{RAW:<13} TTFT {summary['raw_ttft_ms']:>7.1f} ms  decode {summary['raw_decode_tps']:>6.2f} tok/s"
    for name, c in summary["compare"].items():
        yield (f"{name:<13} TTFT {c['ttft_ms']:>7.1f} ms  decode {c['decode_tps']:>6.2f} tok/s  "
               f"decode ratio {c['decode_ratio']:.3f} (>= {TARGET_DECODE_RATIO}: {_verdict(c['decode_pass'])})  "
               f"TTFT overhead {c['ttft_overhead_ms']:+.1f} ms (<= {TARGET_TTFT_MS:.0f}: "
               f"{_verdict(c['ttft_pass'])}; outside the engine: {c['transport_ttft_ms']:.1f} ms)  "
               f"same text as raw: {c['same_text_as_raw']}")
    mem = summary["daemon_rss_loaded_mb"]
    full = (f", {mem['full_context_VmRSS']:.0f} MB after a {mem['full_context_prompt_tokens']}-token prompt"
            if "full_context_VmRSS" in mem else "")
    yield (f"daemon RSS: {mem.get('VmRSS', 0):.0f} MB after load, {summary['daemon_rss_mb']:.0f} MB after the runs"
           f"{full}; peak {summary['daemon_hwm_mb']:.0f} MB (<= {TARGET_RSS_MB:.0f}: {_verdict(summary['rss_pass'])})")


def _median(values: list[Any]) -> str:
    present = [float(v) for v in values if v is not None]
    return f"{statistics.median(present):.1f}" if present else "-"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def environment() -> dict[str, Any]:
    import llama_cpp

    return {"python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__,
            "kernel": platform.release(), "cpus": os.cpu_count(), "loadavg": _loadavg()}


def _loadavg() -> tuple[float, ...]:
    return tuple(round(x, 2) for x in os.getloadavg())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="python -m bench.bench_daemon", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="GGUF model file")
    p.add_argument("--tokens", type=int, default=128, help="max_tokens of every answer")
    p.add_argument("--runs", type=int, default=5, help="measured requests per block (after one warm-up)")
    p.add_argument("--cycles", type=int, default=1, help="raw/daemon cycles before the closing raw block")
    p.add_argument("--threads", type=int, default=min(cores, max(2, cores // 2)))
    p.add_argument("--threads-batch", type=int, default=cores)
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--n-batch", type=int, default=512)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repeat-penalty", type=float, default=1.1, help="the daemon's default; used for both")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="before each request wait up to this many seconds for the machine to be idle (0: never)")
    p.add_argument("--no-fill-context", dest="fill_context", action="store_false",
                   help="skip the daemon's memory check with a prompt that fills the context window")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    env_before, user_prompts = environment(), prompts(args.runs)
    blocks: list[Block] = []
    loaded: dict[str, float] = {}
    for cycle in range(1, args.cycles + 2):
        _LOGGER.info("raw block %d", cycle)
        blocks.append(raw_block(args, cycle, user_prompts))
        if cycle <= args.cycles:
            daemon, memory = daemon_run(args, cycle, user_prompts)
            blocks += daemon
            loaded = loaded or memory
    summary = summarize(blocks, loaded)
    lines = list(table(blocks, summary))
    load = (env_before["loadavg"], _loadavg())
    lines.append(f"load average (1/5/15 min) before: {load[0]}, after: {load[1]}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        result = {"args": {k: str(v) for k, v in vars(args).items()}, "environment": env_before,
                  "loadavg_after": load[1], "summary": summary, "blocks": [asdict(b) for b in blocks]}
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    ok = summary["rss_pass"] and all(c["decode_pass"] and c["ttft_pass"] for c in summary["compare"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
