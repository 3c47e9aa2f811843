"""The daemon under load: many WebSocket clients at once against the real daemon, while /healthz is probed.

Runs the load of tests/test_load.py (default 50 clients x 3 questions, SmolLM2) and reports answers, refusals,
errors, the daemon's RSS, and /healthz latency under load against /healthz latency of the same daemon idle,
measured in the same run first (the ratio says what the load costs the event loop).

    python -m bench.bench_load
    python -m bench.bench_load --clients 100 --questions 2 --model path/to.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from tests.conftest import TEST_MODEL, pulled_model, start_daemon
from tests.test_load import HealthProbe, rss_mb, run_clients


def _latency(probe: HealthProbe) -> dict[str, float]:
    latencies = sorted(probe.latencies_ms)
    return {"probes": len(latencies), "median_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2),
            "max_ms": round(latencies[-1], 2)}


def _idle_probe(port: int, pid: int, seconds: float) -> HealthProbe:
    """/healthz of the idle daemon for `seconds`: the reference."""
    probe = HealthProbe(port, pid)
    probe.start()
    time.sleep(seconds)
    probe.stop.set()
    probe.join(10)
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="GGUF model (default: the SmolLM2 test model)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle /healthz reference")
    args = parser.parse_args()
    model = args.model or pulled_model(TEST_MODEL)
    with tempfile.TemporaryDirectory(prefix="kioskd-bench-load-") as tmp:
        daemon = start_daemon(Path(tmp), "--model", str(model), "--max-tokens", str(args.max_tokens),
                              "--n-ctx", "2048", "--idle-reset", "0", "--log-level", "warning")
        try:
            idle = _idle_probe(daemon.port, daemon.proc.pid, args.idle_seconds)
            baseline = rss_mb(daemon.proc.pid)
            loaded = HealthProbe(daemon.port, daemon.proc.pid)
            loaded.start()
            started = time.monotonic()
            try:
                log = asyncio.run(run_clients(daemon.url, args.clients, args.questions))
            finally:
                loaded.stop.set()
                loaded.join(10)
            elapsed = time.monotonic() - started
            report = {
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "processor": platform.machine()},
                "model": model.name, "clients": args.clients, "questions_each": args.questions,
                "answered": len(log.answers), "refused_busy_then_retried": log.refusals["busy"],
                "other_errors": len(log.errors), "elapsed_s": round(elapsed, 1),
                "healthz_idle": _latency(idle), "healthz_under_load": _latency(loaded),
                "rss_mb": {"baseline": round(baseline), "peak": round(max(loaded.rss_mb, default=baseline))},
            }
            report["p99_ratio_load_over_idle"] = round(
                report["healthz_under_load"]["p99_ms"] / max(report["healthz_idle"]["p99_ms"], 0.01), 2)
        finally:
            daemon.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
