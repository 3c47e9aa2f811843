"""Whole characters and withheld stop strings, on tricky splits."""

from __future__ import annotations

import pytest

from daemon.textstream import StopMatcher, Utf8Assembler


def test_characters_split_across_chunks_come_out_whole() -> None:
    data = "北京 🚀 ok".encode()
    assembler = Utf8Assembler()
    out = [assembler.feed(data[i:i + 1]) for i in range(len(data))]
    assert "".join(out) + assembler.flush() == "北京 🚀 ok"
    assert "\ufffd" not in "".join(out)
    assert out[0] == "" and out[2] == "北"  # nothing until the third byte of 北


def test_invalid_bytes_become_replacement_characters_and_a_cut_character_is_dropped() -> None:
    assembler = Utf8Assembler()
    assert assembler.feed(b"\xe6veyer") == "\ufffdveyer"
    assert assembler.feed(b"\xe4\xb8") == ""
    assert assembler.flush() == "" and assembler.dropped == b"\xe4\xb8"  # the answer ended inside 中
    assert assembler.feed("好".encode()) == "好" and assembler.flush() == "" and assembler.dropped == b""


@pytest.mark.parametrize(("chunks", "stops", "emitted", "stopped"), [
    (["Hello", " wor", "ld"], (), "Hello world", False),
    (["Hello <", "|end", "|> more"], ("<|end|>",), "Hello ", True),
    (["a<", "b"], ("<|end|>",), "a<b", False),
    (["ab", "cSTO", "P"], ("STOP",), "abc", True),
    (["x", "ST", "OX"], ("STOP", "STOX"), "x", True),
    (["3.", "14"], ("\n\n",), "3.14", False),
])
def test_stop_matcher(chunks: list[str], stops: tuple[str, ...], emitted: str, stopped: bool) -> None:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(c) for c in chunks) + matcher.flush()
    assert out == emitted
    assert matcher.stopped is stopped


def test_stop_matcher_withholds_only_a_possible_prefix() -> None:
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("a</") == "a"
    assert matcher.feed("x") == "</x"
