"""Speculative decoding with the real SmolLM2 (daemon.speculative): the text is the text without it.

Each case writes the same answer twice on one model context, proposals off and on, and compares the tokens; the
prompts make the model quote (so proposals are taken) and write freely (so proposals are cut short), and the
counts prove both paths ran. Speed is measured in bench/bench_speculative.py, not here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.llama_adapter import CountingLlama, Decoder, checked_grammar, load_llama, make_renderer
from daemon.messages import ChatMessage, Sampling
from daemon.speculative import RecentAnswers, Speculation, SpeculationStats
from daemon.structured.grammar import response_grammar
from tests.conftest import start_daemon

ROOT = Path(__file__).resolve().parent.parent
HOURS = (ROOT / "bench" / "venue" / "en" / "hours.md").read_text(encoding="utf-8")[:900]
SYSTEM = "You are the helpful assistant of the city library."
QUOTING = [f"Repeat this text exactly:\n\n{HOURS}",
           f"Here are our opening hours:\n\n{HOURS}\n\nWrite them again as a bulleted list."]
FREE = ["Tell me a short story about a library cat.", "What should I read on a rainy day?"]
BUDGET = 64


@pytest.fixture(scope="module")
def llm(test_model: Path) -> CountingLlama:
    return load_llama(test_model, n_ctx=2048, n_batch=256, threads=2, threads_batch=2)


def prompt_of(llm: CountingLlama, question: str) -> list[int]:
    render = make_renderer(llm, "")
    return llm.tokenize_prompt(render([ChatMessage("system", SYSTEM), ChatMessage("user", question)]))


def write(llm: CountingLlama, prompt: list[int], sampling: Sampling, speculate: bool, grammar: str = "",
          references: RecentAnswers | None = None) -> tuple[list[int], SpeculationStats]:
    speculation = Speculation(llm, 12, references) if speculate else None
    decoder = Decoder(llm, prompt, sampling, threading.Event(), BUDGET, grammar=grammar, speculation=speculation)
    for _ in decoder:
        pass
    return decoder.tokens, speculation.stats if speculation else SpeculationStats()


def greedy(**changes: Any) -> Sampling:
    fields: dict[str, Any] = {"max_tokens": BUDGET, "temperature": 0.0, "top_p": 0.95, "top_k": 40,
                              "repeat_penalty": 1.0} | changes
    return Sampling(**fields)


def compare(llm: CountingLlama, questions: list[str], sampling: Sampling, grammar: str = "") -> SpeculationStats:
    total = SpeculationStats()
    for question in questions:
        prompt = prompt_of(llm, question)
        plain, _ = write(llm, prompt, sampling, speculate=False, grammar=grammar)
        drafted, stats = write(llm, prompt, sampling, speculate=True, grammar=grammar)
        assert drafted == plain, f"{question[:40]!r}: {llm.detokenize(plain)!r} != {llm.detokenize(drafted)!r}"
        total.proposed += stats.proposed
        total.accepted += stats.accepted
        total.batches += stats.batches
    return total


def test_greedy_answers_are_token_for_token_the_same(llm: CountingLlama) -> None:
    stats = compare(llm, QUOTING + FREE, greedy())
    assert stats.accepted > 0, "no proposal was ever taken: the batched path did not run"
    assert stats.proposed > stats.accepted, "no proposal was ever cut short: the rejection path did not run"


def test_penalties_see_the_same_tokens(llm: CountingLlama) -> None:
    # The repeat and frequency penalties depend on every token accepted so far, proposed ones included.
    stats = compare(llm, QUOTING[:1] + FREE[:1], greedy(repeat_penalty=1.3, frequency_penalty=0.5))
    assert stats.batches > 0


def test_seeded_sampling_is_unchanged(llm: CountingLlama) -> None:
    stats = compare(llm, QUOTING[:1] + FREE[:1], greedy(temperature=0.8, seed=1234))
    assert stats.batches > 0


def test_a_grammar_constrained_answer_is_unchanged(llm: CountingLlama) -> None:
    grammar = response_grammar({"type": "json_object"})
    checked_grammar(llm, grammar)
    question = f'Return a JSON object with the key "hours" holding this text:\n\n{HOURS[:300]}'
    compare(llm, [question], greedy(), grammar)


def test_earlier_answers_are_proposed_from(llm: CountingLlama) -> None:
    prompt = prompt_of(llm, FREE[0])
    first, _ = write(llm, prompt, greedy(), speculate=True)
    recent = RecentAnswers()
    recent.add(first)
    again, stats = write(llm, prompt, greedy(), speculate=True, references=recent)
    assert again == first
    assert stats.accepted >= len(first) // 2, stats  # the same question again: its answer is the proposal


def test_cancel_stops_within_one_batch(llm: CountingLlama) -> None:
    prompt = prompt_of(llm, QUOTING[0])
    cancel = threading.Event()
    speculation = Speculation(llm, 12)
    decoder = Decoder(llm, prompt, greedy(), cancel, BUDGET, speculation=speculation)
    handed = 0
    for _ in decoder:
        handed += 1
        if handed == 20:
            cancel.set()
    assert decoder.reason == "cancelled"
    assert handed == 20


@pytest.fixture(scope="module")
def daemons(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    common = ("--model", str(test_model), "--max-tokens", "96", "--temperature", "0")
    on = start_daemon(tmp_path_factory.mktemp("spec-on"), *common, env={"KIOSKD_SPECULATIVE_DECODING": "true"})
    off = start_daemon(tmp_path_factory.mktemp("spec-off"), *common, env={"KIOSKD_SPECULATIVE_DECODING": "false"})
    yield {"on": on, "off": off}
    assert on.stop() == 0, on.log()
    assert off.stop() == 0, off.log()


def ask(daemon: Any, question: str) -> dict[str, Any]:
    import urllib.request

    body = json.dumps({"messages": [{"role": "user", "content": question}], "max_tokens": 96}).encode()
    request = urllib.request.Request(daemon.url + "/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return dict(json.load(response))


def metric(daemon: Any, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_the_daemon_answers_the_same_and_reports_the_proposals(daemons: dict[str, Any]) -> None:
    on, off = daemons["on"], daemons["off"]
    with_proposals, without = ask(on, QUOTING[0]), ask(off, QUOTING[0])
    text = with_proposals["choices"][0]["message"]["content"]
    assert text == without["choices"][0]["message"]["content"]
    timings = with_proposals["timings"]
    assert timings["speculative_accepted"] > 0
    assert timings["speculative_proposed"] >= timings["speculative_accepted"]
    assert without["timings"]["speculative_batches"] == 0
    assert metric(on, "kioskd_speculative_accepted_tokens_total") == timings["speculative_accepted"]
    assert metric(on, "kioskd_speculative_batches_total") == timings["speculative_batches"]
    assert metric(off, "kioskd_speculative_proposed_tokens_total") == 0


def test_proposals_stop_at_the_end_of_the_context_window(llm: CountingLlama) -> None:
    # A quote that proposals would run past the window: the answer ends at the window with reason "length".
    text = (HOURS + "\n") * 6
    prompt = prompt_of(llm, f"Repeat this text exactly:\n\n{text}")[: llm.n_ctx() - 40]
    speculation = Speculation(llm, 12)
    decoder = Decoder(llm, prompt, greedy(), threading.Event(), BUDGET, speculation=speculation)
    for _ in decoder:
        pass
    assert len(prompt) + decoder.completion_tokens <= llm.n_ctx()
    assert decoder.reason in ("length", "stop")
    assert speculation.stats.batches > 0
