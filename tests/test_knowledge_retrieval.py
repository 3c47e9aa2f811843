"""Retrieval for a venue in Chinese and English: terms, numbers and times, coverage, and what a question gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.knowledge.facts import facts, unsupported
from daemon.knowledge.index import KnowledgeIndex
from daemon.knowledge.planning import Policy, plan_answer
from daemon.knowledge.terms import language, terms

EN = """# Riverside Library

## Opening hours
Monday to Friday 9:00-21:00, Saturday and Sunday 10:00-18:00. Closed on public holidays.

## Toilets
Keywords: WC
Toilets are on every floor next to the lifts; the accessible toilet is on the ground floor.

## How do I get a library card?
Bring an ID card to the front desk on the ground floor. The card is free and ready in five minutes.

## Printing
Black-and-white printing costs ¥0.50 per page, colour ¥2 per page. The printers are on the 2nd floor.

## Wi-Fi
The network is RiversideFree and the password is books2024.
"""
ZH = """# 河畔图书馆

## 开放时间
周一至周五 9:00-21:00，周六、周日 10:00-18:00。法定节假日闭馆。

## 洗手间
每层电梯旁都有洗手间，一楼有无障碍卫生间。

## 怎么办借书证？
请带身份证到一楼服务台办理，免费，五分钟即可办好。

## 自习室
三楼有自习室，需要提前在服务台预约，每次最多两小时。
"""
POLICY = Policy("You are a kiosk.", "No information.", "没有信息。")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeIndex:
    folder = tmp_path_factory.mktemp("venue")
    (folder / "en.md").write_text(EN, encoding="utf-8")
    (folder / "zh.md").write_text(ZH, encoding="utf-8")
    return KnowledgeIndex.open(folder, folder.parent / "index.db")


def top(index: KnowledgeIndex, question: str) -> str:
    hits = index.search(question, 3)
    return hits[0].section.title if hits else ""


def test_chinese_without_spaces_is_cut_into_characters_and_pairs() -> None:
    found = terms("自习室需要预约吗")
    assert {"自习", "习室", "预约"} <= set(found.pairs)
    assert {"自", "习", "室", "预", "约"} <= set(found.words)
    assert "吗" not in found.words  # a particle, not meaning


def test_english_words_are_stemmed_and_stop_words_dropped() -> None:
    assert terms("Where are the toilets?").words == ("toilet",)
    assert terms("Printing costs").words == terms("print cost").words


def test_question_words_and_word_edges_are_not_terms() -> None:
    asked = terms("电话是多少？书可以借多久？")
    assert {"多", "少", "久"}.isdisjoint(asked.words) and {"多少", "多久"}.isdisjoint(asked.pairs)
    assert {"书可", "以借"}.isdisjoint(asked.pairs)  # two words' edges, not a word
    assert {"电话", "借"} <= set(asked.all())
    assert terms("I can't find my card").words == terms("I cannot find my card").words == ("cannot", "find", "card")
    assert terms("Does it cost anything?").words == ("cost",) and terms("英语角是星期几？").pairs == ("英语", "语角")


def test_full_width_forms_fold_to_ascii() -> None:
    assert terms("ＷＩＦＩ　密码？").all() == terms("wifi 密码?").all()
    assert language("Ｗｉ－Ｆｉ") == "en" and language("Wi-Fi密码") == "zh"


@pytest.mark.parametrize(("question", "title"), [
    ("自习室需要预约吗", "自习室"),              # Chinese without spaces
    ("Wi-Fi密码是多少？", "Wi-Fi"),              # mixed: the English name in a Chinese question
    ("ＷＩＦＩ的密码是什么？", "Wi-Fi"),          # full-width letters and punctuation
    ("周日几点开门？", "开放时间"),               # 周日 is in the section; 开门 is its synonym 开放
    ("星期天开放吗", "开放时间"),                 # 星期天 = 周日
    ("厕所在哪里？", "洗手间"),                   # 厕所 = 洗手间
    ("Where is the restroom?", "Toilets"),       # restroom = toilet
    ("Is the library open on Sunday?", "Opening hours"),
    ("how much does colour printing cost", "Printing"),
    ("What's the wifi password?", "Wi-Fi"),
])
def test_questions_find_their_section(index: KnowledgeIndex, question: str, title: str) -> None:
    assert top(index, question) == title


def test_the_visitors_language_wins_between_translations(index: KnowledgeIndex) -> None:
    assert top(index, "Where are the toilets?") == "Toilets"
    assert top(index, "洗手间在哪？") == "洗手间"


@pytest.mark.parametrize(("question", "kind", "title"), [
    ("How do I get a library card?", "faq", "How do I get a library card?"),
    ("怎么办借书证？", "faq", "怎么办借书证？"),
    ("When do you close on Saturday?", "grounded", "Opening hours"),
    ("周日开门吗？", "grounded", "开放时间"),
    ("Is there parking?", "fallback", None),
    ("有咖啡厅吗？", "fallback", None),
    ("Can I bring my dog?", "fallback", None),
    ("Write a poem about autumn", "ordinary", None),
    ("What is 17*3?", "ordinary", None),
    ("What is 17 times 3?", "ordinary", None),  # "times" is not the opening times
    ("图书馆里可以抽烟吗？", "fallback", None),   # smoking: a topic no section mentions
    ("Is there a café near the toilets?", "fallback", None),
    ("写一首关于秋天的诗", "ordinary", None),
])
def test_what_a_question_gets(index: KnowledgeIndex, question: str, kind: str, title: str | None) -> None:
    plan = plan_answer(index, question, POLICY)
    assert plan.kind == kind
    assert [s.title for s in plan.sources] == ([title] if title else [])
    if kind == "fallback":
        assert plan.text == ("没有信息。" if language(question) == "zh" else "No information.")
    if kind == "grounded":
        assert "Venue information" in plan.system_prompt and plan.system_prompt.startswith("You are a kiosk.")


def test_knowledge_only_refuses_general_questions(index: KnowledgeIndex) -> None:
    only = Policy("You are a kiosk.", "No information.", "没有信息。", only=True)
    assert plan_answer(index, "Write a poem about autumn", only).kind == "fallback"
    assert plan_answer(index, "How do I get a library card?", only).kind == "faq"


def test_a_follow_up_leans_on_the_question_before(index: KnowledgeIndex) -> None:
    assert plan_answer(index, "And what about it?", POLICY).kind != "grounded"
    follow_up = plan_answer(index, "And what about it?", POLICY, previous="When does the library open?")
    assert follow_up.kind == "grounded" and follow_up.sources[0].title == "Opening hours"


@pytest.mark.parametrize(("text", "forms"), [
    ("9:00", {"t0900", "t2100"}),
    ("9 pm", {"t2100"}),
    ("21:00", {"t2100"}),
    ("下午三点半", {"t1530"}),
    ("上午十点", {"t1000"}),
    ("晚上9点", {"t2100"}),
    ("１０：３０", {"t1030", "t2230"}),  # full-width digits and colon
    ("¥0.50", {"0.5"}),
    ("20元", {"20"}),
])
def test_numbers_and_times_are_normalized(text: str, forms: set[str]) -> None:
    assert facts(text) == [forms]


def test_an_answer_may_only_state_times_and_prices_of_its_sections() -> None:
    source = "Monday to Friday 9:00-21:00. Printing costs ¥0.50 per page; you may borrow five books."
    assert unsupported("We open at 9 am and close at 9 pm.", source) == []
    assert unsupported("图书馆上午九点开门，晚上九点关门。", source) == []
    assert unsupported("It costs 0.5 yuan a page, up to 5 books.", source) == []
    assert unsupported("We open at 8:00.", source) == ["08:00"]
    assert unsupported("Printing costs ¥1 per page.", source) == ["1"]
    assert unsupported("1. Bring your card\n2. Ask at the desk", source) == []  # list numbers state nothing
    assert unsupported("周五十分方便，可以借五本书。", source) == []  # a weekday and 十分 ("very") are no numbers
    assert unsupported("三楼有打印机。", source) == ["3"]


def test_the_index_is_rebuilt_only_when_a_file_changes(tmp_path: Path) -> None:
    folder = tmp_path / "venue"
    folder.mkdir()
    (folder / "a.md").write_text("# Hours\nWe open at 9:00.\n", encoding="utf-8")
    db = tmp_path / "index.db"
    assert KnowledgeIndex.open(folder, db).rebuilt
    again = KnowledgeIndex.open(folder, db)
    assert not again.rebuilt and [s.title for s in again.sections] == ["Hours"]
    (folder / "a.md").write_text("# Hours\nWe open at 10:00.\n", encoding="utf-8")
    changed = KnowledgeIndex.open(folder, db)
    assert changed.rebuilt and "10:00" in changed.sections[0].body
    # An index already open keeps answering from what it was (the new file was renamed over it).
    assert "9:00" in again.search("hours")[0].section.body
