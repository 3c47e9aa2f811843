"""Venue knowledge: answers from bench/venue against the baseline of pasting every document into the system prompt.

Three daemons on the same model, temperature 0, `--voice false`, each on a free port with its own state directory:

- **A, knowledge**: `--knowledge bench/venue`.
- **B, baseline**: no knowledge; the default system prompt followed by every Markdown file of the venue.
- **C, plain**: no knowledge, the default system prompt: the same question "without knowledge", for the time to
  first token of a grounded answer (and, for reference, how much of the venue the bare model gets right).

Phases, never two answers at once: A and C are both loaded and each answerable question is asked of A, then of C
(alternating cancels the machine's drift); then A alone gets the unanswerable and the general questions and the
OpenAI API check; then both stop and B alone gets every question. Every question is a new conversation on a new
WebSocket (`chat` frame, `session: null`); before each one the bench waits for the machine to be quiet. Each
daemon first answers two warm-up questions, so the system prompt is in the model's cache, as on a kiosk.

Grading (see bench/README.md): an answerable question is correct on A when the answer holds one of its `expect`
strings (NFKC, case and spaces ignored), `done.knowledge` is faq or grounded and `done.sources` names one of its
expected sections; an unanswerable one is refused when `done.knowledge` is fallback. B and C have no such fields:
correct = holds an `expect` string; refused = holds a refusal phrase or the fallback text. Retrieval hit@1 and
hit@3 come from `KnowledgeIndex.search` in this process, without a model.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.bench_daemon import Timer, free_port, proc_memory, wait_quiet

_LOGGER = logging.getLogger("bench.knowledge")

ROOT = Path(__file__).resolve().parent.parent
VENUE = ROOT / "bench" / "venue"
QUESTIONS = ROOT / "bench" / "knowledge_questions.json"
ARTIFACT = ROOT / "test-artifacts" / "bench-knowledge.json"
TARGET_ANSWERED, TARGET_REFUSED, TARGET_TTFT_RATIO = 0.90, 0.90, 1.3
WARMUPS = ("Hello! What can you help me with?", "Where is the Front Desk?")
REFUSAL_PHRASES = ("don't have", "do not have", "not sure", "no information", "not mentioned", "not provided",
                   "no mention", "not specified", "not available in", "i'm sorry", "i am sorry", "unable to",
                   "cannot find", "can't find", "抱歉", "没有相关", "没有这方面", "不清楚", "没有提到", "未提及",
                   "没有提及", "无法")
"""The baseline has no fallback: a refusal is a phrase like these (or the configured fallback text)."""
KNOWLEDGE_KINDS = ("faq", "grounded", "fallback", "ordinary")
A, B, C = "A knowledge", "B all docs in prompt", "C plain prompt"


@dataclass
class Question:
    id: int
    lang: str
    question: str
    expect: list[str]
    sources: list[str]
    unanswerable: bool = False
    general: bool = False

    @property
    def kind(self) -> str:
        return "unanswerable" if self.unanswerable else "general" if self.general else "answerable"


@dataclass
class Reply:
    config: str
    question_id: int
    text: str
    ttft_ms: float
    """Client side: from sending the chat frame to the first token frame (a retracted one included)."""
    server_ttft_ms: float | None
    prompt_eval_tokens: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    reason: str
    knowledge: str | None
    sources: list[str]
    other_cpu_pct: float
    retracted: str = ""
    """Text the daemon withdrew with a `retract` frame (unsupported by its section) before the replacement."""
    kept_ms: float = 0.0
    """Client side: to the first token frame of the text the visitor was left with (after a `retract`)."""
    ok: bool | None = None
    why: str = ""


@dataclass
class Retrieval:
    question_id: int
    hits: list[dict[str, Any]]
    hit1: bool
    hit3: bool


@dataclass
class Results:
    questions: list[Question]
    retrieval: list[Retrieval] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    warmups: dict[str, list[Reply]] = field(default_factory=dict)
    api_check: dict[str, Any] = field(default_factory=dict)
    daemons: dict[str, dict[str, Any]] = field(default_factory=dict)

    def reply(self, config: str, qid: int) -> Reply | None:
        return next((r for r in self.replies if r.config == config and r.question_id == qid), None)


class FeatureMissing(RuntimeError):
    """The daemon in this tree does not (yet) have the knowledge feature the bench measures."""


# ---- inputs ----

def load_questions(path: Path) -> tuple[list[Question], dict[str, str]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    out = [Question(i, q["lang"], q["question"], list(q.get("expect", [])), list(q.get("sources", [])),
                    bool(q.get("unanswerable")), bool(q.get("general"))) for i, q in enumerate(doc["questions"], 1)]
    return out, dict(doc.get("fallback", {}))


def normalize(text: str) -> str:
    """NFKC (full-width digits and colons become ASCII), case-folded, without whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def contains_any(text: str, needles: list[str] | tuple[str, ...]) -> bool:
    norm = normalize(text)
    return any(normalize(n) in norm for n in needles)


def venue_documents(folder: Path) -> str:
    """Every Markdown file of the venue, in path order, one after another."""
    files = sorted(p for p in folder.rglob("*.md") if p.is_file())
    return "\n\n".join(p.read_text(encoding="utf-8").strip() for p in files)


def baseline_prompt(folder: Path) -> str:
    from daemon.settings import DEFAULT_SYSTEM_PROMPT

    return f"{DEFAULT_SYSTEM_PROMPT}\n\nVenue information:\n\n{venue_documents(folder)}"


def check_feature() -> None:
    """A clear error when the tree has no knowledge feature yet."""
    from daemon.settings import Settings

    if "knowledge" not in {f.name for f in dataclasses.fields(Settings)}:
        raise FeatureMissing("daemon/settings.py has no `knowledge` setting: the venue-knowledge feature is not in "
                             "this tree yet")
    try:
        from daemon.knowledge.index import KnowledgeIndex  # noqa: F401
    except ImportError as exc:
        raise FeatureMissing(f"daemon.knowledge.index.KnowledgeIndex cannot be imported: {exc}") from exc


def default_model() -> Path:
    """What `kioskd pull` prints: the default model, fetched first if it is missing."""
    exe = Path(sys.executable).with_name("kioskd")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "daemon"]
    out = subprocess.run([*cmd, "pull"], check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout
    return Path(out.strip().splitlines()[-1])


# ---- retrieval, in process ----

def retrieval(questions: list[Question], folder: Path, workdir: Path) -> list[Retrieval]:
    from daemon.knowledge.index import KnowledgeIndex

    index = KnowledgeIndex.open(folder, workdir / "knowledge-index.db")
    try:
        out = []
        for q in questions:
            hits = index.search(q.question, limit=3)
            keys = [f"{h.section.file}#{h.section.title}" for h in hits]
            out.append(Retrieval(q.id, [{"source": k, "score": round(h.score, 3), "coverage": round(h.coverage, 3)}
                                        for k, h in zip(keys, hits, strict=True)],
                                 bool(keys) and keys[0] in q.sources, any(k in q.sources for k in keys)))
        return out
    finally:
        index.close()


# ---- daemons ----

class Daemon:
    """`kioskd serve` as a subprocess on a free port with its own state directory and an empty config file."""

    def __init__(self, name: str, args: argparse.Namespace, workdir: Path, extra: dict[str, Any]) -> None:
        self.name = name
        self.ready_s = 0.0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        state = workdir / name.split()[0]
        state.mkdir(parents=True)
        config = state / "config.toml"
        config.write_text("")  # Isolate from /etc/kioskd/config.toml.
        flags: dict[str, Any] = {"config": config, "state-dir": state, "model": args.model, "host": "127.0.0.1",
                                 "port": self.port, "temperature": 0, "max-tokens": args.max_tokens,
                                 "voice": "false", "idle-reset": 0, "log-level": "warning"}
        if args.threads:
            flags["threads"] = args.threads
        if args.threads_batch:
            flags["threads-batch"] = args.threads_batch
        flags.update(extra)
        self.flags = {k: str(v) for k, v in flags.items()}
        exe = Path(sys.executable).with_name("kioskd")
        base = [str(exe)] if exe.is_file() else [sys.executable, "-m", "daemon"]
        argv = [*base, "serve", *(x for k, v in self.flags.items() for x in (f"--{k}", v)), *args.daemon_arg]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}
        self.log = state / "kioskd.log"
        _LOGGER.info("starting %s: %s", name, " ".join(a if len(a) < 80 else a[:60] + "…" for a in argv))
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def describe(self) -> dict[str, Any]:
        flags = {k: (v if len(v) < 200 else f"<{len(v)} characters>") for k, v in self.flags.items()}
        return {"flags": flags, "ready_s": self.ready_s,
                "memory_mb": proc_memory(self.proc.pid) if self.proc.poll() is None else {}}

    async def wait_ready(self, http: aiohttp.ClientSession, limit: float = 300.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: kioskd exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                async with http.get(self.url + "/readyz") as resp:
                    if resp.status == 200:
                        self.ready_s = round(time.monotonic() - started, 1)
                        return self.ready_s
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name}: not ready after {limit:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def ask(http: aiohttp.ClientSession, daemon: Daemon, config: str, qid: int, text: str,
              quiet_wait: float) -> Reply:
    """One question as a new conversation on a new connection; the whole answer and its done frame."""
    await asyncio.to_thread(wait_quiet, quiet_wait)
    async with http.ws_connect(daemon.url + "/ws") as ws:
        timer = Timer(("self", daemon.proc.pid))
        first, kept, retracted = 0.0, 0.0, ""
        await ws.send_str(json.dumps({"type": "chat", "session": None, "text": text}))
        while True:
            msg = await asyncio.wait_for(ws.receive(), 600)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"{daemon.name}: the WebSocket closed before 'done' ({msg!r})")
            frame = json.loads(msg.data)
            if frame["type"] == "token":
                timer.piece(frame["text"])
                first = first or timer.first
                kept = kept or time.perf_counter()
            elif frame["type"] == "retract":  # the text so far is withdrawn; the replacement follows
                retracted += "".join(timer.pieces)
                timer.pieces.clear()
                kept = 0.0
            elif frame["type"] == "error":
                raise RuntimeError(f"{daemon.name}: error frame for {text!r}: {frame}")
            elif frame["type"] == "done":
                break
    timings, usage = frame.get("timings") or {}, frame.get("usage") or {}
    first = first or time.perf_counter()
    kept = kept or first
    return Reply(config, qid, "".join(timer.pieces), round((first - timer.start) * 1000, 1), timings.get("ttft_ms"),
                 timings.get("prompt_eval_tokens"), usage.get("prompt_tokens"), usage.get("completion_tokens"),
                 frame.get("reason", "?"), frame.get("knowledge"), _source_keys(frame.get("sources")),
                 timer.other_cpu_pct(), retracted, round((kept - timer.start) * 1000, 1))


def _source_keys(sources: Any) -> list[str]:
    if not isinstance(sources, list):
        return []
    return [f"{s.get('file')}#{s.get('title')}" for s in sources if isinstance(s, dict)]


async def warm_up(http: aiohttp.ClientSession, daemon: Daemon, config: str, args: argparse.Namespace) -> list[Reply]:
    _LOGGER.info("%s ready after %.1f s", daemon.name, await daemon.wait_ready(http))
    return [await ask(http, daemon, config, 0, w, args.quiet_wait) for w in WARMUPS]


async def run_a_and_c(args: argparse.Namespace, questions: list[Question], results: Results, workdir: Path) -> None:
    a = Daemon(A, args, workdir, {"knowledge": args.venue})
    try:
        c = Daemon(C, args, workdir, {})
    except Exception:
        a.stop()
        raise
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600)) as http:
            results.warmups[A] = await warm_up(http, a, A, args)
            if results.warmups[A][-1].knowledge is None:
                raise FeatureMissing("daemon A's done frame has no `knowledge` field: the daemon answered, but "
                                     "without the knowledge feature's report")
            results.warmups[C] = await warm_up(http, c, C, args)
            answerable = [q for q in questions if q.kind == "answerable"]
            for n, q in enumerate(answerable, 1):
                got = [await ask(http, daemon, config, q.id, q.question, args.quiet_wait)
                       for daemon, config in ((a, A), (c, C))]
                results.replies += got
                _LOGGER.info("A/C %d/%d: %s -> %s", n, len(answerable), q.question, got[0].knowledge)
            for q in questions:
                if q.kind != "answerable":
                    results.replies.append(await ask(http, a, A, q.id, q.question, args.quiet_wait))
            results.api_check = await api_check(http, a, questions, args)
            results.daemons[A], results.daemons[C] = a.describe(), c.describe()
    except Exception:
        for d in (a, c):
            sys.stderr.write(f"--- {d.name} log ---\n{d.tail()}\n")
        raise
    finally:
        a.stop()
        c.stop()


async def run_b(args: argparse.Namespace, questions: list[Question], results: Results, workdir: Path) -> None:
    b = Daemon(B, args, workdir, {"system-prompt": baseline_prompt(args.venue), "n-ctx": args.baseline_n_ctx})
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600)) as http:
            results.warmups[B] = await warm_up(http, b, B, args)
            for n, q in enumerate(questions, 1):
                results.replies.append(await ask(http, b, B, q.id, q.question, args.quiet_wait))
                _LOGGER.info("B %d/%d", n, len(questions))
            results.daemons[B] = b.describe()
    except Exception:
        sys.stderr.write(f"--- {b.name} log ---\n{b.tail()}\n")
        raise
    finally:
        b.stop()


async def api_check(http: aiohttp.ClientSession, daemon: Daemon, questions: list[Question],
                    args: argparse.Namespace) -> dict[str, Any]:
    """Do the OpenAI responses carry `knowledge` and `sources` (top level; streaming: the finish_reason chunk)?"""
    answerable = [q for q in questions if q.kind == "answerable"]
    out: dict[str, Any] = {}
    for q in (answerable[0], answerable[len(answerable) // 2]):
        body = {"model": "kioskd", "messages": [{"role": "user", "content": q.question}], "temperature": 0,
                "max_tokens": args.max_tokens}
        async with http.post(daemon.url + "/v1/chat/completions", json=body) as resp:
            data = await resp.json()
        plain = {"status": resp.status, "knowledge": data.get("knowledge"), "sources": data.get("sources")}
        final: dict[str, Any] = {}
        async with http.post(daemon.url + "/v1/chat/completions", json={**body, "stream": True}) as resp:
            async for chunk in _sse(resp):
                if any(ch.get("finish_reason") for ch in chunk.get("choices", [])):
                    final = chunk
        stream = {"status": resp.status, "knowledge": final.get("knowledge"), "sources": final.get("sources")}
        out[q.question] = {"non_streaming": plain, "streaming_final_chunk": stream}
    return out


async def _sse(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    async for line in resp.content:
        if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
            yield json.loads(line[6:])


# ---- grading and report ----

def grade(results: Results, fallback: dict[str, str]) -> None:
    by_id = {q.id: q for q in results.questions}
    refusals = (*REFUSAL_PHRASES, *fallback.values())
    for r in results.replies:
        q = by_id[r.question_id]
        has_fact = contains_any(r.text, q.expect) if q.expect else None
        if r.config == A:
            if q.kind == "answerable":
                right_source = bool(set(r.sources) & set(q.sources))
                r.ok = bool(has_fact) and r.knowledge in ("faq", "grounded") and right_source
                r.why = ", ".join(w for w, bad in (
                    (f"kind {r.knowledge}", r.knowledge not in ("faq", "grounded")),
                    (f"source {r.sources or 'none'}", r.knowledge in ("faq", "grounded") and not right_source),
                    ("answer lacks the fact", not has_fact)) if bad)
            elif q.kind == "unanswerable":
                r.ok = r.knowledge == "fallback"
                r.why = "" if r.ok else f"kind {r.knowledge}"
            else:
                r.ok = r.knowledge == "ordinary" and has_fact is not False
                r.why = ", ".join(w for w, bad in ((f"kind {r.knowledge}", r.knowledge != "ordinary"),
                                                   ("answer lacks the fact", has_fact is False)) if bad)
        elif q.kind == "unanswerable":
            r.ok = contains_any(r.text, refusals)
            r.why = "" if r.ok else "no refusal phrase"
        else:
            r.ok = has_fact if q.expect else None
            r.why = "answer lacks the fact" if r.ok is False else ""


def _share(ok: int, n: int) -> str:
    return f"{ok}/{n} ({100 * ok / n:.0f} %)" if n else "-"


def _median(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summarize(results: Results) -> dict[str, Any]:
    qs = results.questions
    answerable = [q for q in qs if q.kind == "answerable"]
    unanswerable = [q for q in qs if q.kind == "unanswerable"]
    general = [q for q in qs if q.kind == "general"]
    out: dict[str, Any] = {"configs": {}}
    for config in (A, B, C):
        row: dict[str, Any] = {}
        for label, group in (("answerable", answerable), ("unanswerable", unanswerable), ("general", general)):
            replies = [r for q in group if (r := results.reply(config, q.id)) is not None]
            graded = [r for r in replies if r.ok is not None]
            row[label] = {"ok": sum(bool(r.ok) for r in graded), "n": len(graded), "asked": len(replies)}
            for lang in ("en", "zh"):
                sub = [r for r in graded if next(q for q in group if q.id == r.question_id).lang == lang]
                row[label][lang] = {"ok": sum(bool(r.ok) for r in sub), "n": len(sub)}
            row[label]["kinds"] = dict(Counter(str(r.knowledge) for r in replies))
            row[label]["retracted"] = sum(bool(r.retracted) for r in replies)
        out["configs"][config] = row
    ret = {r.question_id: r for r in results.retrieval}
    for lang in ("all", "en", "zh"):
        group = [q for q in answerable if lang in ("all", q.lang)]
        out[f"hit_{lang}"] = {"hit1": sum(ret[q.id].hit1 for q in group), "hit3": sum(ret[q.id].hit3 for q in group),
                              "n": len(group)}
    grounded = [q for q in answerable if (r := results.reply(A, q.id)) is not None and r.knowledge == "grounded"]
    faq = [q for q in answerable if (r := results.reply(A, q.id)) is not None and r.knowledge == "faq"]

    def med(config: str, group: list[Question], attr: str) -> float | None:
        return _median([getattr(results.reply(config, q.id), attr) for q in group if results.reply(config, q.id)])

    a_ttft, c_ttft = med(A, grounded, "ttft_ms"), med(C, grounded, "ttft_ms")
    a_srv, c_srv = med(A, grounded, "server_ttft_ms"), med(C, grounded, "server_ttft_ms")
    pairs = [(results.reply(A, q.id), results.reply(C, q.id)) for q in grounded]
    per_question = [ra.ttft_ms / rc.ttft_ms for ra, rc in pairs if ra and rc and rc.ttft_ms > 0]
    ratio = a_ttft / c_ttft if a_ttft and c_ttft else None
    out["ttft"] = {"grounded_n": len(grounded), "a_ms": a_ttft, "c_ms": c_ttft, "ratio": ratio,
                   "median_of_ratios": _median(per_question), "a_server_ms": a_srv, "c_server_ms": c_srv,
                   "server_ratio": a_srv / c_srv if a_srv and c_srv else None,
                   "b_ms": med(B, grounded, "ttft_ms"), "a_kept_ms": med(A, grounded, "kept_ms"),
                   "kept_ratio": (k / c_ttft) if (k := med(A, grounded, "kept_ms")) and c_ttft else None,
                   "faq_n": len(faq), "a_faq_ms": med(A, faq, "ttft_ms"),
                   "pass": ratio is not None and ratio <= TARGET_TTFT_RATIO}
    out["prompt"] = {config: {"eval": med(config, grounded, "prompt_eval_tokens"),
                              "eval_min": min((r.prompt_eval_tokens for q in grounded
                                               if (r := results.reply(config, q.id)) and r.prompt_eval_tokens
                                               is not None), default=None),
                              "eval_max": max((r.prompt_eval_tokens for q in grounded
                                               if (r := results.reply(config, q.id)) and r.prompt_eval_tokens
                                               is not None), default=None),
                              "total": med(config, grounded, "prompt_tokens")} for config in (A, B, C)}
    out["startup"] = {config: {"ready_s": d.get("ready_s"), "rss_mb": d.get("memory_mb", {}).get("VmRSS"),
                               "hwm_mb": d.get("memory_mb", {}).get("VmHWM"),
                               "first_eval": w[0].prompt_eval_tokens if (w := results.warmups.get(config)) else None,
                               "first_ttft_ms": w[0].ttft_ms if w else None}
                      for config, d in results.daemons.items()}
    a_row = out["configs"][A]
    out["answered_pass"] = a_row["answerable"]["n"] > 0 and \
        a_row["answerable"]["ok"] / a_row["answerable"]["n"] >= TARGET_ANSWERED
    out["refused_pass"] = a_row["unanswerable"]["n"] > 0 and \
        a_row["unanswerable"]["ok"] / a_row["unanswerable"]["n"] >= TARGET_REFUSED
    return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(results: Results, s: dict[str, Any]) -> Iterator[str]:
    cfg = s["configs"]
    yield f"{'configuration':<22} {'answerable correct':>20} {'en':>7} {'zh':>7} {'unanswerable refused':>21} " \
          f"{'en':>5} {'zh':>5} {'general ordinary':>17}"
    for config in (A, B, C):
        row = cfg[config]
        ans, una, gen = row["answerable"], row["unanswerable"], row["general"]
        yield (f"{config:<22} {_share(ans['ok'], ans['n']):>20} {ans['en']['ok']:>3}/{ans['en']['n']:<3} "
               f"{ans['zh']['ok']:>3}/{ans['zh']['n']:<3} {_share(una['ok'], una['n']):>21} "
               f"{una['en']['ok']:>2}/{una['en']['n']:<2} {una['zh']['ok']:>2}/{una['zh']['n']:<2} "
               f"{(_share(gen['ok'], gen['n']) if config == A else '-'):>17}")
    yield (f"targets (A): answerable >= {TARGET_ANSWERED:.0%}: {_verdict(s['answered_pass'])}; "
           f"unanswerable >= {TARGET_REFUSED:.0%}: {_verdict(s['refused_pass'])}.  B and C: answer holds an expected "
           "string; refused = a refusal phrase.  A: also knowledge faq|grounded and a right source / fallback.")
    yield ""
    h = s["hit_all"]
    yield (f"retrieval (KnowledgeIndex.search, in process): hit@1 {_share(h['hit1'], h['n'])}, hit@3 "
           f"{_share(h['hit3'], h['n'])}  (en hit@1 {s['hit_en']['hit1']}/{s['hit_en']['n']}, hit@3 "
           f"{s['hit_en']['hit3']}/{s['hit_en']['n']}; zh hit@1 {s['hit_zh']['hit1']}/{s['hit_zh']['n']}, hit@3 "
           f"{s['hit_zh']['hit3']}/{s['hit_zh']['n']})")
    t = s["ttft"]
    yield (f"TTFT, the {t['grounded_n']} questions A answered grounded (client, median): A {_fmt(t['a_ms'])} ms, "
           f"C (same question, no knowledge) {_fmt(t['c_ms'])} ms, ratio {_fmt(t['ratio'], 2)} "
           f"(<= {TARGET_TTFT_RATIO}: {_verdict(t['pass'])}); median of per-question ratios "
           f"{_fmt(t['median_of_ratios'], 2)}; daemon ttft_ms {_fmt(t['a_server_ms'])} / {_fmt(t['c_server_ms'])} = "
           f"{_fmt(t['server_ratio'], 2)}; B {_fmt(t['b_ms'])} ms")
    yield (f"time to the first word that stayed (a retracted answer counts from its replacement): A median "
           f"{_fmt(t['a_kept_ms'])} ms, over C {_fmt(t['kept_ratio'], 2)}")
    yield f"TTFT of the {t['faq_n']} FAQ answers on A (curated text, no model): median {_fmt(t['a_faq_ms'], 1)} ms"
    p = s["prompt"]
    yield "prompt tokens per grounded question (median; evaluated = not reused from the cache):"
    for config in (A, B, C):
        yield (f"  {config:<22} evaluated {_fmt(p[config]['eval']):>5} (min {p[config]['eval_min']}, max "
               f"{p[config]['eval_max']}), whole prompt {_fmt(p[config]['total']):>5}")
    yield "start-up (ready = /readyz 200; first = the first warm-up question, tokens evaluated and client TTFT):"
    for config, st in s["startup"].items():
        yield (f"  {config:<22} ready after {_fmt(st['ready_s'], 1)} s, first question evaluated {st['first_eval']} "
               f"tokens in {_fmt(st['first_ttft_ms'])} ms; RSS {_fmt(st['rss_mb'])} MB (peak {_fmt(st['hwm_mb'])})")
    yield "knowledge kinds reported by A:"
    for label in ("answerable", "unanswerable", "general"):
        kinds = cfg[A][label]["kinds"]
        yield (f"  {label:<13} " + ", ".join(f"{k} {kinds.get(k, 0)}" for k in (*KNOWLEDGE_KINDS, "None")
                                           if kinds.get(k, 0) or k != "None")
               + f"  (of which retracted after streaming: {cfg[A][label]['retracted']})")
    for q, check in results.api_check.items():
        yield f"OpenAI API on A, {q!r}: {json.dumps(check, ensure_ascii=False)}"


def _mark(reply: Reply | None) -> str:
    return "-" if reply is None or reply.ok is None else "ok" if reply.ok else "NO"


def question_lines(results: Results) -> Iterator[str]:
    ret = {r.question_id: r for r in results.retrieval}
    yield f"{'#':>2} {'type':<5} {'A kind':<8} {'A':<2} {'B':<2} {'C':<2} {'A ttft':>7} {'C ttft':>7} {'A eval':>6} " \
          f"{'hit':<3} question | A sources | why A failed"
    for q in results.questions:
        a, b, c = (results.reply(cfg, q.id) for cfg in (A, B, C))
        hit = "-" if not q.sources else "1" if ret[q.id].hit1 else "3" if ret[q.id].hit3 else "x"
        yield (f"{q.id:>2} {q.kind[:5]:<5} {a.knowledge if a else '-'!s:<8} {_mark(a):<2} {_mark(b):<2} "
               f"{_mark(c):<2} {_fmt(a.ttft_ms if a else None):>7} {_fmt(c.ttft_ms if c else None):>7} "
               f"{_fmt(a.prompt_eval_tokens if a else None):>6} {hit:<3} {q.question} | "
               f"{', '.join(a.sources) if a and a.sources else '-'}" + (f" | {a.why}" if a and a.why else ""))


def failures(results: Results) -> Iterator[str]:
    """What went wrong on A, with what retrieval found and the start of the answer."""
    ret = {r.question_id: r for r in results.retrieval}
    for q in results.questions:
        a = results.reply(A, q.id)
        if a is None or a.ok is not False:
            continue
        top = ", ".join(f"{h['source']} {h['score']}" for h in ret[q.id].hits) or "nothing"
        retrieval_note = "" if not q.sources else " retrieval miss;" if not ret[q.id].hit3 else \
            " right section not first;" if not ret[q.id].hit1 else ""
        yield f"#{q.id} {q.question} [{q.kind}] ->{retrieval_note} {a.why}"
        yield f"     top-3: {top}"
        if a.retracted:
            yield f"     retracted: {' '.join(a.retracted.split())[:240]!r}"
        yield f"     answer: {' '.join(a.text.split())[:240]!r}"


def environment() -> dict[str, Any]:
    import llama_cpp

    return {"python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__,
            "kernel": platform.release(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()}


def _load(values: tuple[float, ...]) -> str:
    return "/".join(f"{x:.2f}" for x in values)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_knowledge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="GGUF model (default: what `kioskd pull` prints)")
    p.add_argument("--venue", type=Path, default=VENUE, help="the knowledge folder (default: bench/venue)")
    p.add_argument("--questions", type=Path, default=QUESTIONS, help="default: bench/knowledge_questions.json")
    p.add_argument("--max-tokens", type=int, default=256, help="max_tokens of every answer")
    p.add_argument("--baseline-n-ctx", type=int, default=8192,
                   help="context window of daemon B, which holds every document (A and C: the daemon's default)")
    p.add_argument("--threads", type=int, default=0, help="generation threads (default: the daemon's)")
    p.add_argument("--threads-batch", type=int, default=0, help="prompt threads (default: the daemon's)")
    p.add_argument("--quiet-wait", type=float, default=20.0,
                   help="before each question wait up to this many seconds for the machine to be idle (0: never)")
    p.add_argument("--daemon-arg", action="append", default=[], help="extra argument for every daemon (repeatable)")
    p.add_argument("--json", type=Path, default=ARTIFACT, help="per-question results (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        check_feature()
    except FeatureMissing as exc:
        sys.stderr.write(f"bench_knowledge: {exc}\n")
        return 2
    args.venue = args.venue.resolve()
    args.model = args.model or default_model()
    questions, fallback = load_questions(args.questions)
    results = Results(questions)
    env_before = environment()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="kioskd-bench-knowledge-") as tmp:
        results.retrieval = retrieval(questions, args.venue, Path(tmp))
        try:
            asyncio.run(run_a_and_c(args, questions, results, Path(tmp)))
            asyncio.run(run_b(args, questions, results, Path(tmp)))
        except FeatureMissing as exc:
            sys.stderr.write(f"bench_knowledge: {exc}\n")
            return 2
    grade(results, fallback)
    summary = summarize(results)
    load_after = os.getloadavg()
    lines = [*question_lines(results), "", *table(results, summary), "", "A's failures:",
             *(list(failures(results)) or ["  none"]),
             f"model {args.model}; started {started}; load average before {_load(env_before['loadavg'])}, "
             f"after {_load(load_after)}"]
    sys.stdout.write("\n".join(lines) + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "started": started, "environment": env_before,
        "loadavg_after": load_after, "daemons": results.daemons, "summary": summary,
        "questions": [asdict(q) for q in questions], "retrieval": [asdict(r) for r in results.retrieval],
        "replies": [asdict(r) for r in results.replies],
        "warmups": {k: [asdict(r) for r in v] for k, v in results.warmups.items()},
        "api_check": results.api_check}, indent=1, ensure_ascii=False) + "\n")
    _LOGGER.info("per-question results in %s", args.json)
    ok = summary["answered_pass"] and summary["refused_pass"] and summary["ttft"]["pass"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
