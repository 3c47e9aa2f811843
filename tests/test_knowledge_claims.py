"""What a grounded answer claims (yes where its section says no, nothing new, no number when one is asked for)
and the section's own words that replace it."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.knowledge.claims import adds_nothing, asks_back, contradicts, lacks_amount, negative, sentences
from daemon.knowledge.folder import Section
from daemon.knowledge.index import KnowledgeIndex
from daemon.knowledge.quotes import best_quote, best_sentence
from daemon.knowledge.support import SupportCheck

HOLIDAYS = ("The library is closed on New Year's Day and on Christmas Day (25 December). "
            "On all other public holidays it opens with Sunday hours, 12:00-17:00.")
HOLIDAYS_ZH = "元旦、春节的前三天和圣诞节闭馆。其他法定节假日按周日时间开放，12:00-17:00。"
FOOD_ZH = "可以携带有盖的水杯。只能在一楼的休闲阅读区吃东西。"


def weight(term: str) -> float:
    return {"christma": 3.0, "春节": 3.0, "吃东": 3.0, "东西": 2.0}.get(term, 1.0)


def test_sentences_split_at_stops_but_not_inside_times_and_addresses() -> None:
    assert sentences("Open 9.30-18:00. See riverside.example for more! 周日开放。几点？") == [
        "Open 9.30-18:00.", "See riverside.example for more!", "周日开放。", "几点？"]


@pytest.mark.parametrize(("text", "denies"), [
    ("The library is closed on Christmas Day.", True), ("You can't eat here.", True),
    ("只能在一楼吃东西。", True), ("春节闭馆。", True), ("无需预约。", True),
    ("We open at 9:00.", False), ("有免费无线网络。", False), ("无障碍入口在河畔路。", False),
])
def test_negative_sentences(text: str, denies: bool) -> None:
    assert negative(text) is denies


@pytest.mark.parametrize(("claim", "question", "evidence", "about"), [
    ("Yes, the library is open on Christmas Day.", "Are you open on Christmas Day?", HOLIDAYS, "closed"),
    ("春节期间图书馆是开放的。", "春节期间图书馆开吗？", HOLIDAYS_ZH, "春节"),
    ("图书馆里面可以吃东西。", "图书馆里面可以吃东西吗？", FOOD_ZH, "吃东西"),
])
def test_a_yes_where_the_section_says_no_contradicts_it(claim: str, question: str, evidence: str,
                                                        about: str) -> None:
    parts = sentences(evidence)
    reference = next(s for s in parts if about in s)
    assert contradicts(claim, parts, question, reference, first=True)
    assert not contradicts(claim.replace("open", "closed").replace("开放的", "闭馆的").replace("可以", "只能在一楼"),
                           parts, question, reference, first=True)


def test_a_later_sentence_is_held_against_the_sentence_it_echoes() -> None:
    parts = sentences(HOLIDAYS)
    assert not contradicts("On other public holidays it opens with Sunday hours.", parts, "Christmas?", parts[0])
    assert contradicts("It is not open on other public holidays.", parts, "Christmas?", parts[0])


def test_an_answer_that_only_echoes_the_question_adds_nothing() -> None:
    assert adds_nothing("Yes.", "Can I renew my books online?", "Each book can be renewed twice online.")
    assert adds_nothing("我家孩子十岁，可以办卡。", "我家孩子十岁，可以办卡吗？", "16岁以下的儿童可以办理少儿借书证。")
    assert not adds_nothing("Yes, twice.", "Can I renew my books online?", "Each book can be renewed twice online.")
    assert not adds_nothing("周末上午十点开门。", "周末几点开门？", "Weekends 10:00-18:00.")  # 十点 is 10:00


def test_an_answer_without_the_number_it_was_asked_for_lacks_it() -> None:
    card = "The card is free for residents. Visitors from outside pay ¥50 per year."
    assert lacks_amount("The card is free for residents.", "How much is a card for me?", card)
    assert not lacks_amount("It costs ¥50 per year.", "How much is a card for me?", card)
    assert not lacks_amount("The card is free for residents.", "Who can get a card?", card)
    assert not lacks_amount("It is free.", "How much is the Wi-Fi?", "The Wi-Fi is free.")  # no number to give


def test_an_answer_that_echoes_the_question_back_asks_back() -> None:
    assert asks_back("根据还书箱的信息，如果还书晚了一天罚多少钱？") and asks_back("Is it open? ")
    assert not asks_back("Overdue items cost ¥0.50 per day.")
    check = SupportCheck("Returns\nOverdue items cost ¥0.50 per item per day.", "How much is the late fee?")
    for piece in ["Overdue", " items", " cost", " what", "?"]:
        check.feed(piece)
    check.finish()
    assert check.violation == "answers with a question"


def test_the_support_check_catches_a_contradiction_at_the_end_of_its_sentence() -> None:
    check = SupportCheck(f"Public holidays\n{HOLIDAYS}", "Are you open on Christmas Day?", sentences(HOLIDAYS)[0])
    for piece in ["Yes", ",", " we", " are", " open", " on", " Christmas", " Day", "."]:
        check.feed(piece)
    assert check.violation is not None and "contradicts" in check.violation and not check.declined


def test_a_short_section_is_quoted_whole_a_long_one_by_its_best_sentences() -> None:
    short = Section("h.md", "Public holidays", 1, HOLIDAYS)
    assert best_quote(short, "Are you open on Christmas Day?", weight) == HOLIDAYS
    long_body = " ".join([HOLIDAYS, *(f"Rule {n} is about something else entirely, at length." for n in range(8))])
    long = Section("h.md", "Public holidays", 1, long_body)
    assert best_quote(long, "Are you open on Christmas Day?", weight) == sentences(HOLIDAYS)[0]
    assert best_sentence(short, "Are you open on Christmas Day?", weight) == sentences(HOLIDAYS)[0]
    assert best_sentence(Section("f.md", "饮食", 1, FOOD_ZH), "可以吃东西吗", weight) == sentences(FOOD_ZH)[1]


def test_rarity_is_counted_within_each_language(tmp_path: Path) -> None:
    """"图书馆" in every Chinese section weighs little, though the English half never holds it."""
    zh = "".join(f"# 区域{n}\n图书馆第{n}区。\n\n" for n in range(6)) + "# 饮食\n图书馆里只能在一楼吃东西。\n"
    en = "".join(f"# Area {n}\nLibrary area {n}.\n\n" for n in range(7))
    (tmp_path / "zh.md").write_text(zh, encoding="utf-8")
    (tmp_path / "en.md").write_text(en, encoding="utf-8")
    index = KnowledgeIndex.open(tmp_path, tmp_path / "index.db")
    assert index.term_weight("图书") < 0.5 < index.term_weight("吃东")
    assert index.term_weight("图书") == pytest.approx(index.term_weight("librari"))
