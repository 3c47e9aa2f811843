"""Load on loopback: 50 WebSocket clients each ask 3 questions of the real daemon and the SmolLM2 test model at
once, while a separate thread polls /healthz every 50 ms and the daemon's memory is sampled.

Every question is either answered or cleanly refused (`busy`, retried after `retry_after` as a client should);
there are no errors of any other kind; every answer is in the history afterwards, word for word; /healthz
answers within 50 ms at the 99th percentile throughout (the event loop is never blocked); the daemon's memory
stays bounded. The figures are written to test-artifacts/load.json (docs/reliability.md quotes them).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon
from tests.wsclient import ask

pytestmark = pytest.mark.timeout(600)

CLIENTS = 50
QUESTIONS = 3
DEADLINE_S = 420.0
HEALTH_PERIOD_S = 0.05
HEALTH_P99_MS = 50.0
MEMORY_GROWTH_MB = 400.0
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@dataclass
class ClientLog:
    answers: list[tuple[str, str, str]] = field(default_factory=list)  # (session, question, answer)
    refusals: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class HealthProbe(threading.Thread):
    """GET /healthz every HEALTH_PERIOD_S over one keep-alive connection, on its own thread (not the test's loop),
    recording each latency; and the daemon's RSS every 10th probe."""

    def __init__(self, port: int, pid: int) -> None:
        super().__init__(name="health-probe", daemon=True)
        self.port, self.pid = port, pid
        self.latencies_ms: list[float] = []
        self.failures: list[str] = []
        self.rss_mb: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop.wait(HEALTH_PERIOD_S):
            start = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures.append(f"HTTP {response.status}")
            except OSError as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                continue
            self.latencies_ms.append((time.perf_counter() - start) * 1000)
            if len(self.latencies_ms) % 10 == 0:
                self.rss_mb.append(rss_mb(self.pid))
        conn.close()


async def _client(url: str, number: int, log: ClientLog, deadline: float, questions: int) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws", heartbeat=None) as ws:
        session: str | None = None
        for turn in range(questions):
            question = f"Visitor {number}, question {turn + 1}: name one fruit."
            while True:
                if time.monotonic() > deadline:
                    log.errors.append(f"client {number}: deadline before question {turn + 1}")
                    return
                answer = await ask(ws, question, session=session, limit_s=DEADLINE_S)
                session, error = answer.session or session, answer.error
                if error is None:
                    assert session is not None and answer.done is not None
                    log.answers.append((session, question, answer.text))
                    break
                if error.get("code") == "busy":
                    log.refusals["busy"] += 1
                    await asyncio.sleep(float(error.get("retry_after", 1)))
                    continue
                log.errors.append(f"client {number}: {error}")
                return


async def run_clients(url: str, clients: int = CLIENTS, questions: int = QUESTIONS) -> ClientLog:
    """`clients` WebSocket clients at once, each asking `questions` questions in its own conversation (bench/
    bench_load.py uses this too)."""
    log = ClientLog()
    deadline = time.monotonic() + DEADLINE_S
    await asyncio.gather(*(_client(url, n, log, deadline, questions) for n in range(clients)))
    return log


def _history_of(daemon: Daemon, session: str) -> list[dict[str, Any]]:
    status, body = daemon.get(f"/api/sessions/{session}")
    assert status == 200, (session, status, body[:300])
    turns: list[dict[str, Any]] = json.loads(body)["turns"]
    return turns


def test_fifty_clients_three_questions_each(daemon_factory: Any, test_model: Path) -> None:
    daemon = daemon_factory("--model", str(test_model), "--max-tokens", "24", "--n-ctx", "2048",
                            "--idle-reset", "0", "--log-level", "warning")
    probe = HealthProbe(daemon.port, daemon.proc.pid)
    baseline_mb = rss_mb(daemon.proc.pid)
    probe.start()
    started = time.monotonic()
    try:
        log = asyncio.run(run_clients(daemon.url))
    finally:
        probe.stop.set()
        probe.join(10)
    elapsed = time.monotonic() - started

    latencies = sorted(probe.latencies_ms)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    peak_mb = max(probe.rss_mb, default=baseline_mb)
    figures = {
        "clients": CLIENTS, "questions_each": QUESTIONS, "answered": len(log.answers),
        "refused_busy_then_retried": log.refusals["busy"], "other_errors": len(log.errors),
        "elapsed_s": round(elapsed, 1), "health_probes": len(latencies),
        "health_ms": {"median": round(statistics.median(latencies), 2), "p99": round(p99, 2),
                      "max": round(latencies[-1], 2)},
        "rss_mb": {"baseline": round(baseline_mb), "peak": round(peak_mb), "end": round(rss_mb(daemon.proc.pid))},
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(figures, indent=2) + "\n")

    assert log.errors == [], log.errors[:10]
    assert len(log.answers) == CLIENTS * QUESTIONS, figures
    assert probe.failures == [], probe.failures[:10]
    assert len(latencies) > elapsed / HEALTH_PERIOD_S / 4, figures  # the probe really ran throughout
    assert p99 <= HEALTH_P99_MS, figures
    assert peak_mb - baseline_mb <= MEMORY_GROWTH_MB, figures

    # Nothing lost: every answer is stored in its own visitor's session, in order, word for word.
    by_session: dict[str, list[tuple[str, str]]] = {}
    for session, question, answer in log.answers:
        by_session.setdefault(session, []).append((question, answer))
    assert len(by_session) == CLIENTS
    for session, expected in by_session.items():
        stored = [(t["role"], t["content"]) for t in _history_of(daemon, session)]
        assert stored == [pair for q, a in expected for pair in (("user", q), ("assistant", a))], session
    assert "Traceback" not in daemon.log()
