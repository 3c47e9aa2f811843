"""Venue knowledge in the real daemon with the real SmolLM2 model: FAQ and fallback answers, grounded answers
that read only their own tokens, prefix states kept on disk across restarts, a broken folder refused at start,
and a changed folder reloaded on SIGHUP while an answer is being written."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon
from tests.wsclient import Answer, ask_once

FAQ_EN = "How do I get a library card?"
VENUE = {
    "en.md": "# Riverside Library\n\n## Opening hours\nMonday to Friday 9:00-21:00, weekends 10:00-18:00.\n\n"
             f"## {FAQ_EN}\nBring an ID card to the front desk. The card is free.\n\n"
             "## Printing\nPrinting costs 0.50 yuan per page. The printers are on the second floor.\n",
    "zh.md": "# 河畔图书馆\n\n## 开放时间\n周一至周五 9:00-21:00，周末 10:00-18:00。\n\n"
             "## 怎么办借书证？\n请带身份证到服务台办理，免费。\n",
}
FALLBACK = "I don't have that information. Please ask at the front desk."
FALLBACK_ZH = "抱歉，我没有这方面的信息，请到服务台咨询。"


def write_venue(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def ask(d: Daemon, question: str, **kwargs: Any) -> Answer:
    answer = asyncio.run(asyncio.wait_for(ask_once(d.url, question, **kwargs), 90))
    assert answer.done is not None, answer.error
    return answer


def completion(d: Daemon, question: str) -> dict[str, Any]:
    body = json.dumps({"messages": [{"role": "user", "content": question}], "temperature": 0}).encode()
    req = urllib.request.Request(d.url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=90) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


def wait_for_log(d: Daemon, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in d.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log:\n{d.log()}")
        time.sleep(0.1)


@pytest.fixture
def venue(tmp_path: Path) -> Path:
    return write_venue(tmp_path / "venue", VENUE)


def test_faq_and_fallback_answers_in_both_languages(test_model: Path, venue: Path,
                                                    daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--knowledge", str(venue))
    faq = ask(d, "how can I get a library card")
    assert faq.text == "Bring an ID card to the front desk. The card is free."
    assert faq.done is not None and faq.done["knowledge"] == "faq"
    assert faq.done["sources"] == [{"file": "en.md", "title": FAQ_EN}]
    zh = ask(d, "怎么办借书证？")
    assert zh.text == "请带身份证到服务台办理，免费。" and zh.done is not None
    assert zh.done["sources"] == [{"file": "zh.md", "title": "怎么办借书证？"}]
    parking, coffee = ask(d, "Is there parking?"), ask(d, "有咖啡厅吗？")
    assert parking.text == FALLBACK and coffee.text == FALLBACK_ZH
    assert parking.done is not None and parking.done["knowledge"] == "fallback" and parking.done["sources"] == []
    api = completion(d, "Is there parking?")
    assert api["choices"][0]["message"]["content"] == FALLBACK and api["sources"] == []
    api = completion(d, FAQ_EN)
    assert api["knowledge"] == "faq" and api["sources"] == [{"file": "en.md", "title": FAQ_EN}]
    poem = ask(d, "Write a short poem about autumn")
    assert poem.done is not None and poem.done["knowledge"] == "ordinary" and poem.text.strip()


def grounded_reads(answer: Answer) -> tuple[int, int]:
    assert answer.done is not None
    assert answer.done["knowledge"] in ("grounded", "fallback"), answer.done  # fallback: the model strayed
    return answer.done["timings"]["prompt_eval_tokens"], answer.done["usage"]["prompt_tokens"]


def test_a_grounded_question_reads_only_its_own_tokens_even_after_a_restart(
        test_model: Path, venue: Path, tmp_path: Path, daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--knowledge", str(venue))
    assert "prompt prefixes: 0 loaded from disk, 6 computed" in d.log()  # the system prompt + 5 sections
    evaluated, prompt = grounded_reads(ask(d, "When do you open on Saturday?"))
    assert prompt > 80 and evaluated <= 20  # the question and the template's few tokens, not the section
    api = completion(d, "How much does printing cost per page?")
    assert api["sources"] in ([{"file": "en.md", "title": "Printing"}], [])
    assert api["timings"]["prompt_eval_tokens"] <= 20
    assert d.stop() == 0

    again = daemon_factory("--model", str(test_model), "--knowledge", str(venue))
    log = again.log()
    assert "is up to date" in log and "indexed" not in log  # the unchanged folder was not indexed again
    assert "prompt prefixes: 6 loaded from disk, 0 computed" in log
    evaluated, _ = grounded_reads(ask(again, "When do you open on Saturday?"))
    assert evaluated <= 20  # the first question after a restart pays nothing for the venue text either


def test_a_damaged_prefix_state_is_built_again(test_model: Path, venue: Path, tmp_path: Path,
                                               daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--knowledge", str(venue))
    assert d.stop() == 0
    states = sorted((tmp_path / "state" / "prefixes").glob("*.kvstate"))
    assert len(states) == 6
    data = bytearray(states[0].read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the stored state
    states[0].write_bytes(bytes(data))
    states[1].write_bytes(states[1].read_bytes()[:1000])  # and one cut short, as by a power cut
    again = daemon_factory("--model", str(test_model), "--knowledge", str(venue))
    assert "prompt prefixes: 4 loaded from disk, 2 computed" in again.log()
    assert again.log().count("building it again") == 2
    assert ask(again, FAQ_EN).done is not None


def test_a_broken_folder_is_refused_at_start_with_the_check_messages(test_model: Path, tmp_path: Path,
                                                                     daemon_factory: Callable[..., Daemon]) -> None:
    broken = write_venue(tmp_path / "broken", {"a.md": "# Hours\n\n# Hours\nDaily.\n", "b.md": "# Wi-Fi\n"})
    d = daemon_factory("--model", str(test_model), "--knowledge", str(broken), wait=False)
    assert d.proc.wait(60) == 4
    log = d.log()
    assert f"the knowledge folder {broken} has 2 problem(s)" in log
    assert 'a.md:1: section "Hours" has no text' in log and 'b.md:1: section "Wi-Fi" has no text' in log
    missing = daemon_factory("--model", str(test_model), "--knowledge", str(tmp_path / "nowhere"), wait=False)
    assert missing.proc.wait(60) == 4 and "nowhere does not exist" in missing.log()


def test_sighup_reloads_a_changed_folder_while_an_answer_is_written(
        test_model: Path, venue: Path, daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--knowledge", str(venue), "--max-tokens", "400")

    async def long_answer_across_a_reload() -> Answer:
        task = asyncio.ensure_future(ask_once(d.url, "Write a very long story about a lighthouse keeper."))
        await asyncio.sleep(1.0)  # the answer is being written
        (venue / "parking.md").write_text("# Is there parking?\nYes, 20 spaces behind the library.\n", "utf-8")
        d.proc.send_signal(signal.SIGHUP)
        return await asyncio.wait_for(task, 120)

    story = asyncio.run(long_answer_across_a_reload())
    assert story.done is not None and story.done["reason"] in ("stop", "length") and len(story.tokens) > 20
    wait_for_log(d, "reload: now answering from 6 venue sections")
    parking = ask(d, "Is there parking?")
    assert parking.text == "Yes, 20 spaces behind the library." and parking.done is not None
    assert parking.done["sources"] == [{"file": "parking.md", "title": "Is there parking?"}]

    (venue / "parking.md").write_text("# Is there parking?\n", "utf-8")  # broken: no text
    d.proc.send_signal(signal.SIGHUP)
    wait_for_log(d, "reload: keeping the previous venue knowledge")
    assert 'parking.md:1: section "Is there parking?" has no text' in d.log()
    assert ask(d, "Is there parking?").text == "Yes, 20 spaces behind the library."  # the old index answers
