"""The support check that stands between a grounded answer and the visitor, and the canned answer's pieces."""

from __future__ import annotations

import pytest

from daemon.knowledge.answers import pieces
from daemon.knowledge.support import SupportCheck

SOURCE = "Opening hours\nMonday to Friday 9:00-21:00, weekends 10:00-18:00. Printing ¥0.50 a page."


def stream(check: SupportCheck, parts: list[str]) -> list[str]:
    return [check.feed(p) for p in parts] + [check.finish()]


def test_a_supported_answer_comes_through_whole_and_a_time_only_once_complete() -> None:
    check = SupportCheck(SOURCE)
    out = stream(check, ["We", " open", " at", " 9", ":", "00", " and", " close", " at", " 9", " pm", "."])
    assert "".join(out) == "We open at 9:00 and close at 9 pm."
    assert out[3:6] == [" ", "", ""]  # "9", ":", "00" are held until the time is complete
    assert check.violation is None


def test_an_invented_time_is_never_released() -> None:
    check = SupportCheck(SOURCE)
    out = stream(check, ["We", " open", " at", " 8", ":", "00", " on", " weekdays", "."])
    assert "".join(out) == "We open at "
    assert check.violation == "states 08:00, which the sections do not"


@pytest.mark.parametrize("parts", [
    ["周末", "上午", "十", "点", "开门", "。"],
    ["图书馆", "周一至周五", "9", "点", "开门，", "晚上", "九点", "关门。"],
])
def test_chinese_times_are_checked_too(parts: list[str]) -> None:
    check = SupportCheck(SOURCE)
    assert "".join(stream(check, parts)) == "".join(parts)
    assert check.violation is None


def test_a_wrong_chinese_time_is_caught() -> None:
    check = SupportCheck(SOURCE)
    out = stream(check, ["周末", "早上", "八", "点", "开门"])
    assert "".join(out) == "周末早上" and check.violation == "states 08:00, which the sections do not"


@pytest.mark.parametrize("answer", [
    "I'm sorry, but the information doesn't mention parking.",
    "The information does not provide any details about parking.",
    "抱歉，资料中没有提到停车场。",
    "I don't know.",
])
def test_the_model_saying_it_does_not_know_makes_the_answer_unsupported(answer: str) -> None:
    check = SupportCheck(SOURCE)
    stream(check, pieces(answer))
    assert check.violation is not None and "do not answer it" in check.violation


def test_nothing_is_released_after_a_violation() -> None:
    check = SupportCheck(SOURCE)
    stream(check, ["Open", " at", " 7", ":00", "."])
    assert check.feed(" More text.") == "" and check.finish() == ""


@pytest.mark.parametrize("text", [
    "Bring an ID card to the **front desk**.\n\n- free\n- ready in five minutes\n",
    "请带身份证到一楼服务台办理，免费。\n\n五分钟即可办好！",
    "  Mixed 中文 and English, 9:00–21:00.  ",
])
def test_curated_text_is_split_into_pieces_that_add_up(text: str) -> None:
    parts = pieces(text)
    assert "".join(parts) == text and len(parts) > 3
