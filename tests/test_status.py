"""GET /status: the one line of fleet health a kiosk gives the status playbook. A real daemon with SmolLM2 reports
itself while loading and when ready, and its day's tally survives a power cut; the tally file's failures (corrupt,
yesterday's, unwritable) are tried with a scripted engine in the real app."""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon import __version__
from daemon.metrics.routes import tally_path
from daemon.metrics.tally import DayTally
from daemon.models.catalogue import lookup
from daemon.settings import load_settings
from tests.conftest import TEST_MODEL, Daemon, start_daemon
from tests.fakes import ScriptedEngine, Served, request_json, serve
from tests.test_ws_protocol import connect
from tests.wsclient import Answer, ask

FIELDS = {"version", "ready", "model", "model_sha256", "voice", "voice_detail", "day", "answers_today",
          "ttft_median_s_today", "last_error", "uptime_s", "board"}


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


def status_of(d: Daemon) -> dict[str, Any]:
    code, body = d.get("/status")
    assert code == 200, body
    line: dict[str, Any] = json.loads(body)
    assert set(line) == FIELDS, line
    return line


def until(check: Callable[[], Any], seconds: float = 30.0) -> Any:
    async def poll() -> Any:
        for _ in range(int(seconds / 0.05)):
            if result := check():
                return result
            await asyncio.sleep(0.05)
        raise AssertionError("condition not met in time")

    return run(poll())


async def ask_while_loading(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws") as ws:
        await ws.receive()  # hello
        answer = await ask(ws, "Hello?")
        assert answer.error is not None, answer
        return answer.error


async def answers(url: str, questions: list[str]) -> list[Answer]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws") as ws:
        await ws.receive()  # hello
        return [await ask(ws, question) for question in questions]


def test_a_loading_kiosk_reports_itself_and_its_day_survives_a_power_cut(test_model: Path, tmp_path: Path) -> None:
    args = ("--model", str(test_model), "--max-tokens", "8", "--temperature", "0", "--fault-load-delay", "3")
    d = start_daemon(tmp_path, *args, wait=False)
    loading = until(lambda: _listening(d) and status_of(d))
    assert loading["ready"] is False and loading["version"] == __version__
    assert loading["model"] == test_model.stem and loading["voice"] == "off"
    assert loading["day"] == datetime.date.today().isoformat()
    assert loading["answers_today"] == 0 and loading["ttft_median_s_today"] is None
    assert loading["last_error"] is None and loading["uptime_s"] >= 0
    error = run(ask_while_loading(d.url))  # the kiosk's own trouble: the day's last error
    assert error["code"] == "model_loading"
    d.wait_ready()

    done = [a.done for a in run(answers(d.url, ["Hello!", "What is 2 + 2?", "Name a fruit."]))]
    assert all(done), done
    line = until(lambda: (s := status_of(d))["model_sha256"] and s)  # filled in after READY
    assert line["ready"] is True and line["model_sha256"] == lookup(TEST_MODEL).sources[0].sha256
    assert line["answers_today"] == 3
    median = statistics.median(round(a["timings"]["ttft_ms"]) for a in done if a) / 1000
    assert line["ttft_median_s_today"] == pytest.approx(median, abs=0.0015)
    last = line["last_error"]
    assert last["code"] == "model_loading" and "loading" in last["message"]
    at = datetime.datetime.fromisoformat(last["at"].replace("Z", "+00:00"))
    assert at.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.UTC) - at).total_seconds()) < 120

    tally = tally_path(load_settings({"state_dir": str(tmp_path / "state")}, environ={}))
    until(lambda: json.loads(tally.read_text())["answers"] == 3)  # written off the loop, soon after the answer
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL  # a power cut: no shutdown hook runs

    again = start_daemon(tmp_path, *args[:-2])
    try:
        after = status_of(again)
        same = ("day", "answers_today", "ttft_median_s_today", "last_error", "model", "version")
        assert {k: after[k] for k in same} == {k: line[k] for k in same}
        assert after["ready"] is True
        run(answers(again.url, ["Bye."]))
        assert status_of(again)["answers_today"] == 4
    finally:
        assert again.stop() == 0, again.log()


def _listening(d: Daemon) -> bool:
    try:
        return d.get("/healthz", timeout=1.0)[0] == 200
    except OSError:
        return False


# ---- the tally file, with a scripted engine ----

async def status(served: Served) -> dict[str, Any]:
    code, body = await request_json(served, "GET", "/status")
    assert code == 200, body
    return dict(body)


@pytest.mark.parametrize("content", [b"\x00\xffnot json", b"{}", b"[1, 2]", b'{"day": "2026-13-45"}',
                                     b'{"day": "%s", "answers": -1, "ttft_ms": {}, "last_error": null}',
                                     b'{"day": "%s", "answers": 1, "ttft_ms": {"x": 1}, "last_error": null}'],
                         ids=["binary", "empty-object", "list", "bad-date", "negative", "bad-ttft"])
def test_a_corrupt_tally_is_logged_and_started_afresh(tmp_path: Path, content: bytes,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tally_path(load_settings({"state_dir": str(tmp_path)}, environ={}))
    path.parent.mkdir(parents=True)
    path.write_bytes(content.replace(b"%s", datetime.date.today().isoformat().encode()))

    async def test() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serve(ScriptedEngine(), state_dir=str(tmp_path)) as served, connect(served) as client:
            fresh = await status(served)
            await client.chat("Hello!")
            return fresh, await status(served)

    fresh, after = run(test())
    assert fresh["answers_today"] == 0 and fresh["last_error"] is None and fresh["ready"] is True
    assert after["answers_today"] == 1
    assert "the status tally" in caplog.text and "start afresh" in caplog.text
    saved = json.loads(path.read_text(encoding="utf-8"))  # replaced by a good one
    assert saved["answers"] == 1 and saved["day"] == fresh["day"]


def test_yesterdays_tally_is_not_counted_today(tmp_path: Path) -> None:
    path = tally_path(load_settings({"state_dir": str(tmp_path)}, environ={}))
    path.parent.mkdir(parents=True)
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    path.write_text(json.dumps({"day": yesterday, "answers": 40, "ttft_ms": {"300": 40},
                                "last_error": {"code": "busy", "message": "x", "at": "2026-01-01T00:00:00Z"}}))

    async def test() -> dict[str, Any]:
        async with serve(ScriptedEngine(), state_dir=str(tmp_path)) as served:
            return await status(served)

    line = run(test())
    assert line["day"] == datetime.date.today().isoformat()
    assert line["answers_today"] == 0 and line["last_error"] is None and line["ttft_median_s_today"] is None


def test_an_unwritable_tally_is_logged_and_the_status_still_answers(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "status").write_text("a file where the tally's folder should be")

    async def test() -> dict[str, Any]:
        async with serve(ScriptedEngine(), state_dir=str(tmp_path)) as served, connect(served) as client:
            await client.chat("Hello!")
            for _ in range(100):
                if "cannot save the status tally" in caplog.text:
                    break
                await asyncio.sleep(0.02)
            return await status(served)

    assert run(test())["answers_today"] == 1
    assert "cannot save the status tally" in caplog.text


def test_status_answers_while_loading_and_names_busy_as_the_last_error(tmp_path: Path) -> None:
    async def test() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        engine = ScriptedEngine(["w "] * 200, delay=0.01, queue_size=0, ready=False)
        async with serve(engine, state_dir=str(tmp_path)) as served, connect(served) as first, \
                connect(served) as second:
            loading = await status(served)
            engine.ready = True
            await first.send(type="chat", text="Tell me a long story.", session=None)
            assert (await first.recv())["type"] == "session"
            assert (await first.recv())["type"] == "token"
            refused = (await second.chat("And me?"))[-1]
            await first.send(type="cancel")
            await first.until_end()
            await second.send(type="chat", text=123, session=None)  # the caller's mistake: not the last error
            await second.recv()
            return loading, refused, await status(served)

    loading, refused, line = run(test())
    assert loading["ready"] is False and loading["answers_today"] == 0
    assert refused["code"] == "busy"
    assert line["answers_today"] == 1 and line["last_error"]["code"] == "busy"


def test_the_day_changes_at_local_midnight() -> None:
    today = [datetime.date(2026, 12, 7)]
    tally = DayTally(Path("/nonexistent/today.json"), today=lambda: today[0])
    for seconds in (0.3, 0.1, 0.2, None):  # None: an answer cancelled before its first text
        tally.answered(seconds)
    tally.failed("busy", "the model is busy")
    assert tally.current.answers == 4 and tally.current.median_ttft_s() == 0.2
    tally.answered(0.5)
    assert tally.current.median_ttft_s() == 0.25  # an even count: the mean of the two middle ones
    today[0] = datetime.date(2026, 12, 8)
    day = tally.current
    assert (day.day, day.answers, day.median_ttft_s(), day.last_error) == ("2026-12-08", 0, None, None)



def test_a_fleet_model_link_is_reported_by_the_file_it_points_at(test_model: Path, tmp_path: Path) -> None:
    """A fleet's model setting is /var/lib/kioskd/models/current.gguf, a link into releases/<sha256>/<file>:
    /status and the model info name the file the link points at, not "current"."""
    release = tmp_path / "models" / "releases" / "b179c952"
    release.mkdir(parents=True)
    (release / test_model.name).symlink_to(test_model)
    link = tmp_path / "models" / "current.gguf"
    link.symlink_to(release / test_model.name)
    d = start_daemon(tmp_path, "--model", str(link), "--max-tokens", "4")
    try:
        line = until(lambda: (s := status_of(d))["model_sha256"] and s)
        assert line["model"] == test_model.stem
        code, scrape = d.get("/metrics")
        assert code == 200 and f'model="{test_model.stem}"' in scrape.decode(), scrape[-2000:]
    finally:
        assert d.stop() == 0, d.log()
