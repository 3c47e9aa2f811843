"""The cold-start bench's own parts, without a model: READY=1 caught from a real sd_notify datagram, token counts
read from prefix state files in the daemon's format, and the Raspberry Pi projection's arithmetic."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.bench_coldstart import NotifySocket
from bench.bench_projection import (
    BOARDS,
    TurnTokens,
    prefix_tree_tokens,
    projection_rows,
    startup_rows,
    stored_prefixes,
)
from daemon.prefix_states import PrefixStates

SEND_READY = ("import time; from daemon.notify import Notifier; n = Notifier(); n.status('loading'); "
              "time.sleep(0.5); n.ready('serving'); time.sleep(5)")


def test_ready_is_caught_when_the_process_sends_it(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", SEND_READY], env={"NOTIFY_SOCKET": str(notify.path)},
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        ready = notify.ready_at(proc, limit=30)
        assert 0.5 <= ready - started < 4.5  # after the STATUS line and the pause, long before the process ends
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        notify.close()
    assert not notify.path.exists()


def test_a_process_that_exits_without_ready_is_an_error(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], env={"NOTIFY_SOCKET": str(notify.path)})
    with pytest.raises(RuntimeError, match=r"no READY=1 \(exit status 3\)"):
        notify.ready_at(proc, limit=30)
    notify.close()


def test_stored_prefixes_are_read_back_from_the_daemons_files(tmp_path: Path) -> None:
    states = PrefixStates(tmp_path, {"model": "m"})
    prefixes = [(1, 2, 3, 4), (1, 2, 3, 9, 9), (7,)]
    for p in prefixes:
        states._write(tmp_path / (states.key(p) + ".kvstate"), p, b"state" * 10)
    (tmp_path / "cut.kvstate").write_bytes((tmp_path / (states.key(prefixes[1]) + ".kvstate")).read_bytes()[:40])
    (tmp_path / "other.kvstate").write_bytes(b"not a prefix state\n")
    assert sorted(stored_prefixes(tmp_path)) == sorted(prefixes)


def test_prefix_tree_tokens_counts_each_shared_start_once() -> None:
    assert prefix_tree_tokens([]) == 0
    assert prefix_tree_tokens([(1, 2, 3)]) == 3
    # 1 2 3 read once; then 4, then 9 9; (7,) shares nothing
    assert prefix_tree_tokens([(1, 2, 3, 9, 9), (7,), (1, 2, 3, 4)]) == 3 + 1 + 2 + 1


def test_projection_divides_read_tokens_by_the_prompt_rate_and_answers_by_the_decode_rate() -> None:
    pi5, pi4 = BOARDS
    rows = list(projection_rows([TurnTokens("first", 348, 174, 95)]))
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert cells[:4] == ["first", "348", "174", "95"]
    assert cells[4:7] == ["1.00", f"{95 / pi5.decode_tps:.1f}", "2.00"]
    assert cells[7:10] == [f"{174 / pi4.prompt_tps:.2f}", "10.0", f"{348 / pi4.prompt_tps:.2f}"]
    assert len(rows[0].split("|")) == len(rows[2].split("|"))
    assert "| Pi 4 | 500 | 20.0 | 0 |" in list(startup_rows(500))
