"""SentenceChunker: the same speakable chunks however a streamed answer is split, on tricky English and Chinese."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

import pytest

from audio.chunker import DEFAULT_CONFIG, ChunkerConfig, SentenceChunker, SpeechChunk

Splitter = Callable[[str], list[str]]
Chunks = list[tuple[str, str]]  # (kind, text): compact to write and to read in a failing diff

CODE = "The code is shown on the screen."
TABLE = "The table is shown on the screen."
CODE_ZH = "代码显示在屏幕上。"
TABLE_ZH = "表格显示在屏幕上。"


def random_pieces(seed: int, largest: int = 8) -> Splitter:
    """Model tokens are arbitrary fragments: cut anywhere, sizes 1..largest, reproducibly."""

    def split(text: str) -> list[str]:
        rng = random.Random(seed)
        pieces: list[str] = []
        start = 0
        while start < len(text):
            size = rng.randint(1, largest)
            pieces.append(text[start:start + size])
            start += size
        return pieces

    return split


SPLITS: dict[str, Splitter] = {
    "whole": lambda text: [text],
    "chars": list,
    "random1": random_pieces(1),
    "random2": random_pieces(2),
    "random3": random_pieces(3, largest=3),
}


def chunk_objects(text: str, split: Splitter, config: ChunkerConfig = DEFAULT_CONFIG) -> list[SpeechChunk]:
    chunker = SentenceChunker(config)
    out: list[SpeechChunk] = []
    for piece in split(text):
        out.extend(chunker.feed(piece))
    out.extend(chunker.flush())
    return out


def chunk(text: str, split: Splitter = SPLITS["whole"], config: ChunkerConfig = DEFAULT_CONFIG) -> Chunks:
    return [(c.kind, c.text) for c in chunk_objects(text, split, config)]


def s(text: str) -> tuple[str, str]:
    return ("sentence", text)


def f(text: str) -> tuple[str, str]:
    return ("final", text)


def c(text: str) -> tuple[str, str]:
    return ("clause", text)


def p(text: str) -> tuple[str, str]:
    return ("placeholder", text)


REALISTIC_ENGLISH = """Sure! Here is how to install the package.

1. Open a terminal.
2. Run the installer, e.g. `pip install kioskd`.
3. Start the service with **kioskd serve**.

```bash
pip install kioskd
kioskd serve --port 8080
```

That's it. Dr. Smith recommends version 2.1 for the U.S. Army kiosks. Let me know if you need help!"""

REALISTIC_ENGLISH_CHUNKS = [
    s("Sure!"), s("Here is how to install the package."), s("Open a terminal."),
    s("Run the installer, e.g. pip install kioskd."), s("Start the service with kioskd serve."), p(CODE),
    s("That's it."), s("Dr. Smith recommends version 2.1 for the U.S. Army kiosks."),
    f("Let me know if you need help!"),
]

CHINESE_ANSWER = """以下是三种水果的对比：

| 名称 | 价格 |
|---|---|
| 苹果 | 3.14 |
| 香蕉 | 2.5 |

苹果最贵，约为3.14元。香蕉很便宜！你想买哪一种？"""

CHINESE_ANSWER_CHUNKS = [
    s("以下是三种水果的对比："), p(TABLE_ZH), s("苹果最贵，约为3.14元。"), s("香蕉很便宜！"), f("你想买哪一种？"),
]

CASES = [
    # Sentence ends
    pytest.param("Hello world. This is a test.", [s("Hello world."), f("This is a test.")], id="english"),
    pytest.param("Is it ready? Yes! It is.", [s("Is it ready?"), s("Yes!"), f("It is.")], id="question-bang"),
    pytest.param("Really?! Yes.", [s("Really?!"), f("Yes.")], id="interrobang"),
    pytest.param('He said "Stop." Then he left.', [s('He said "Stop."'), f("Then he left.")], id="closing-quote"),
    pytest.param("(This is an aside.) Next one.", [s("(This is an aside.)"), f("Next one.")], id="closing-paren"),
    pytest.param("你好。今天天气很好！你去吗？", [s("你好。"), s("今天天气很好！"), f("你去吗？")], id="chinese"),
    pytest.param("第一；第二。", [s("第一；"), f("第二。")], id="chinese-semicolon"),
    pytest.param("等一下……好吧。", [s("等一下……"), f("好吧。")], id="chinese-ellipsis"),
    pytest.param("他说：“你好。”然后走了。", [s("他说：“你好。”"), f("然后走了。")], id="chinese-closing-quote"),
    pytest.param("「好的。」我们走吧！", [s("「好的。」"), f("我们走吧！")], id="chinese-corner-quote"),
    pytest.param("太好了!我们开始吧。", [s("太好了!"), f("我们开始吧。")], id="ascii-bang-before-chinese"),
    # No cut inside numbers, versions, names, abbreviations
    pytest.param("Pi is about 3.14 today. Yes.", [s("Pi is about 3.14 today."), f("Yes.")], id="pi"),
    pytest.param("Install v1.2.3 from example.com with setup.py today. Done.",
                 [s("Install v1.2.3 from example.com with setup.py today."), f("Done.")], id="version-domain-file"),
    pytest.param("We sold 1,000 units by 9:30 today. Good.",
                 [s("We sold 1,000 units by 9:30 today."), f("Good.")], id="thousands-time"),
    pytest.param("The model has 0.5B parameters. It is small.",
                 [s("The model has 0.5B parameters."), f("It is small.")], id="decimal-suffix"),
    pytest.param("Use a fruit, e.g. this apple, i.e. that one. Next.",
                 [s("Use a fruit, e.g. this apple, i.e. that one."), f("Next.")], id="eg-ie"),
    pytest.param("Some tools, e.g. Python, are free. Next.",
                 [s("Some tools, e.g. Python, are free."), f("Next.")], id="eg-before-capital"),
    pytest.param("Dr. Smith met Mr. Lee and Mrs. Chan. Then Ms. Wu came from St. Louis. End.",
                 [s("Dr. Smith met Mr. Lee and Mrs. Chan."), s("Then Ms. Wu came from St. Louis."), f("End.")],
                 id="titles"),
    pytest.param("Go to room No. 5 now. No. It is closed.",
                 [s("Go to room No. 5 now."), s("No."), f("It is closed.")], id="number-abbreviation"),
    pytest.param("Apples, pears, etc. are fruit. Good.", [s("Apples, pears, etc. are fruit."), f("Good.")],
                 id="etc-lowercase"),
    pytest.param("We need apples, pears, etc. The rest can wait.",
                 [s("We need apples, pears, etc."), f("The rest can wait.")], id="etc-uppercase"),
    pytest.param("The U.S. Army is big. It is.", [s("The U.S. Army is big."), f("It is.")], id="initialism"),
    pytest.param("Wait... what happened? Nothing... Really.",
                 [s("Wait... what happened?"), s("Nothing..."), f("Really.")], id="three-dots"),
    pytest.param("So...this works. Ok.", [s("So...this works."), f("Ok.")], id="three-dots-inside-word"),
    pytest.param("Well… maybe. Fine… Go.", [s("Well… maybe."), s("Fine…"), f("Go.")], id="ellipsis-english"),
    pytest.param("So did I. Then we left.", [s("So did I."), f("Then we left.")], id="pronoun-i"),
    pytest.param("Yahoo!Inc is a name. Ok.", [s("Yahoo!Inc is a name."), f("Ok.")], id="bang-inside-token"),
    pytest.param("1. First step\n2. Second step\n10) Tenth step\n",
                 [s("First step"), s("Second step"), s("Tenth step")], id="ordered-list"),
    pytest.param("## 1. Install\nRun it.", [s("1. Install"), f("Run it.")], id="ordinal-in-heading"),
    pytest.param("2024. That was a good year.", [s("2024."), f("That was a good year.")], id="year-not-list"),
    # Newlines
    pytest.param("First line without a stop\nSecond line.\n", [s("First line without a stop"), s("Second line.")],
                 id="newline-ends-chunk"),
    pytest.param("One.\n\nTwo", [s("One."), f("Two")], id="paragraph"),
    pytest.param("One.\r\nTwo.\r\n", [s("One."), s("Two.")], id="crlf"),
    # Markdown and HTML
    pytest.param("This is **bold**, *italic*, __strong__ and _em_ text.",
                 [f("This is bold, italic, strong and em text.")], id="emphasis"),
    pytest.param("Call my_var_name and __init__ now.", [f("Call my_var_name and init now.")], id="snake-case"),
    pytest.param("Run `pip install kioskd` then `my_var`. Done.",
                 [s("Run pip install kioskd then my_var."), f("Done.")], id="inline-code"),
    pytest.param("``a*b`` is kept.", [f("a*b is kept.")], id="double-backtick-code"),
    pytest.param("# Title\n> Quoted text.\n- dash item\n* star item\n+ plus item\n> - quoted item\n",
                 [s("Title"), s("Quoted text."), s("dash item"), s("star item"), s("plus item"), s("quoted item")],
                 id="heading-quote-lists"),
    pytest.param("See [the docs](https://example.com/a_(b)) and ![a cat](cat.png) now.",
                 [f("See the docs and now.")], id="link-image"),
    pytest.param("Visit https://www.example.com/path?q=1. Then rest.",
                 [s("Visit example.com."), f("Then rest.")], id="bare-url"),
    pytest.param("Mail <https://docs.example.org/x> today.", [f("Mail docs.example.org today.")], id="autolink"),
    pytest.param("Line one<br>line two <b>bold</b> <!-- note -->end.", [f("Line one line two bold end.")],
                 id="html"),
    pytest.param("Use a < b and <3 here.", [f("Use a < b and <3 here.")], id="angle-not-tag"),
    pytest.param("About ~5 minutes, ~~old~~ new.", [f("About ~5 minutes, old new.")], id="tilde-strikethrough"),
    pytest.param("Use \\*literal\\* stars.", [f("Use *literal* stars.")], id="escaped"),
    pytest.param("Hi.\n---\n***\n!!!\nBye.", [s("Hi."), f("Bye.")], id="punctuation-only-dropped"),
    pytest.param("Great job 🎉👍🏽! Next step ✅.", [s("Great job!"), f("Next step.")], id="emoji"),
    pytest.param("  Lots   of\tspace  here .  \n", [s("Lots of space here.")], id="whitespace"),
    # Code blocks
    pytest.param("Here is code:\n```python\nprint('hi. there')\n```\nThat is all.\n",
                 [s("Here is code:"), p(CODE), s("That is all.")], id="code-block"),
    pytest.param("~~~\ncode here\n~~~\nDone.", [p(CODE), f("Done.")], id="tilde-fence"),
    pytest.param("Code:\n```\nx = 1\n", [s("Code:"), p(CODE)], id="unclosed-fence"),
    pytest.param("````md\n```\ninner\n```\n````\nAfter.", [p(CODE), f("After.")], id="nested-fence"),
    pytest.param("1. Run:\n   ```bash\n   make\n   ```\n2. Done.\n", [s("Run:"), p(CODE), s("Done.")],
                 id="indented-fence"),
    pytest.param("``x`` and `y`. Ok.", [s("x and y."), f("Ok.")], id="backticks-not-fence"),
    # Tables
    pytest.param("Compare:\n| a | b |\n|---|---|\n| 1 | 2 |\n\nEnd.", [s("Compare:"), p(TABLE), f("End.")],
                 id="table"),
    pytest.param("| a |\n|---|\n\n| b |\n|---|\nDone.", [p(TABLE), p(TABLE), f("Done.")], id="two-tables"),
    pytest.param("| a |\n| 1 |", [p(TABLE)], id="table-at-end"),
    # Chinese and mixed
    pytest.param("安装方法如下：\n```bash\npip install kioskd\n```\n完成。",
                 [s("安装方法如下："), p(CODE_ZH), f("完成。")], id="chinese-code"),
    pytest.param("Python 是一种编程语言。It is popular. 你知道吗？",
                 [s("Python 是一种编程语言。"), s("It is popular."), f("你知道吗？")], id="mixed"),
    pytest.param("我用 Python 3.11 写代码，效果很好。Great!", [s("我用 Python 3.11 写代码，效果很好。"), f("Great!")],
                 id="mixed-in-sentence"),
    pytest.param(REALISTIC_ENGLISH, REALISTIC_ENGLISH_CHUNKS, id="realistic-english"),
    pytest.param(CHINESE_ANSWER, CHINESE_ANSWER_CHUNKS, id="realistic-chinese"),
]


@pytest.mark.parametrize("split_name", SPLITS)
@pytest.mark.parametrize(("text", "expected"), CASES)
def test_chunks_do_not_depend_on_how_the_answer_is_split(text: str, expected: Chunks, split_name: str) -> None:
    assert chunk(text, SPLITS[split_name]) == expected


CLAUSE_CASES = [
    pytest.param("Well, when you start the kiosk, it loads. Then, later, more.",
                 [c("Well, when you start the kiosk,"), s("it loads."), f("Then, later, more.")], id="english"),
    pytest.param("你好，我们今天要讲的是，如何安装。然后，再说。",
                 [c("你好，我们今天要讲的是，"), s("如何安装。"), f("然后，再说。")], id="chinese-counts-double"),
    pytest.param("The total cost is 1,000 dollars, roughly. Ok.",
                 [c("The total cost is 1,000 dollars,"), s("roughly."), f("Ok.")], id="thousands"),
    pytest.param("Please meet me around 9:30 sharp: bring tea. Ok.",
                 [c("Please meet me around 9:30 sharp:"), s("bring tea."), f("Ok.")], id="time"),
    pytest.param("The bus stop is located near the main entrance. Ok.",
                 [c("The bus stop is located"), s("near the main entrance."), f("Ok.")], id="phrase-break"),
    pytest.param("The library is open from nine in the morning until six.",
                 [c("The library is open"), f("from nine in the morning until six.")],
                 id="phrase-break-only-the-first-chunk"),
    pytest.param("Hi and welcome. Then at noon we close. Ok.",
                 [s("Hi and welcome."), s("Then at noon we close."), f("Ok.")], id="phrase-break-needs-a-long-head"),
    pytest.param("Short, text. Then, a longer clause here, more.",
                 [s("Short, text."), f("Then, a longer clause here, more.")], id="only-before-first-sentence"),
    pytest.param("# Title\nOne, two three four five, six.", [s("Title"), f("One, two three four five, six.")],
                 id="heading-is-a-sentence"),
]


@pytest.mark.parametrize("split_name", SPLITS)
@pytest.mark.parametrize(("text", "expected"), CLAUSE_CASES)
def test_clause_min_chars_starts_speech_early(text: str, expected: Chunks, split_name: str) -> None:
    assert chunk(text, SPLITS[split_name], ChunkerConfig(clause_min_chars=12)) == expected


@pytest.mark.parametrize("split_name", SPLITS)
def test_run_on_text_is_cut_at_a_space(split_name: str) -> None:
    words = [f"word{i}" for i in range(60)]
    chunks = chunk_objects(" ".join(words), SPLITS[split_name], ChunkerConfig(max_chunk_chars=50))
    assert [ch.kind for ch in chunks] == ["clause"] * (len(chunks) - 1) + ["final"]
    assert all(len(ch.text) <= 50 for ch in chunks)
    assert all(len(ch.text) > 40 for ch in chunks[:-1])  # cut at the last space, not an earlier one
    assert " ".join(ch.text for ch in chunks).split() == words


@pytest.mark.parametrize("split_name", SPLITS)
def test_run_on_chinese_is_cut_at_a_clause_mark_else_at_the_limit(split_name: str) -> None:
    group = "一二三四五六七八九十，"
    assert chunk(group * 6, SPLITS[split_name], ChunkerConfig(max_chunk_chars=25)) == [
        c(group * 2), c(group * 2), f(group * 2),
    ]
    assert chunk("字" * 120, SPLITS[split_name], ChunkerConfig(max_chunk_chars=50)) == [
        c("字" * 50), c("字" * 50), f("字" * 20),
    ]


def test_an_english_sentence_end_waits_for_the_next_piece() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("It costs 3.") == []
    assert chunker.feed("14 dollars.") == []
    assert chunker.feed(" ") == []  # "Dr. Smith" or "etc. and" are still possible
    assert chunker.feed("Next") == [SpeechChunk("It costs 3.14 dollars.", "sentence")]
    assert chunker.flush() == [SpeechChunk("Next", "final")]


def test_exclamation_ends_at_the_following_space() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("Wow!") == []
    assert chunker.feed(" ") == [SpeechChunk("Wow!", "sentence")]


def test_a_chinese_sentence_end_needs_only_the_next_character() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("你好。") == []  # a closing quote may still follow
    assert chunker.feed("我") == [SpeechChunk("你好。", "sentence")]
    assert chunker.feed("们走吧！\n") == [SpeechChunk("我们走吧！", "sentence")]


def test_emphasis_markers_split_across_pieces_are_stripped() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("**bo") + chunker.feed("ld**") + chunker.feed(" _it") + chunker.feed("_ text.") == []
    assert chunker.flush() == [SpeechChunk("bold it text.", "final")]


def test_a_fence_split_across_pieces_holds_the_code_back() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("Intro.\n``") == [SpeechChunk("Intro.", "sentence")]
    assert chunker.feed("`py") == []
    assert chunker.feed("thon\nprint('Not spoken.')\n``") == []
    assert chunker.feed("`\nAfter.") == [SpeechChunk(CODE, "placeholder")]
    assert chunker.flush() == [SpeechChunk("After.", "final")]


def test_text_before_a_fence_is_out_before_the_code_arrives() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("Look at this") == []
    assert chunker.feed("\n```") == [SpeechChunk("Look at this", "sentence")]


def test_the_table_placeholder_is_said_once_after_the_first_row() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("| a | b |") == []
    assert chunker.feed("\n") == [SpeechChunk(TABLE, "placeholder")]
    assert chunker.feed("|---|---|\n| 1 | 2 |\n") == []
    assert chunker.flush() == []


def test_flush_resets_everything_for_the_next_answer() -> None:
    chunker = SentenceChunker(ChunkerConfig(clause_min_chars=5))
    assert chunker.feed("Hello there, friend. Ok, good.\n```\ncode") == [
        SpeechChunk("Hello there,", "clause"), SpeechChunk("friend.", "sentence"), SpeechChunk("Ok, good.", "sentence"),
    ]
    assert chunker.flush() == [SpeechChunk(CODE, "placeholder")]
    assert chunker.feed("| a |") == []
    assert chunker.flush() == [SpeechChunk(TABLE, "placeholder")]
    assert chunker.feed("Again, a new answer. Done") == [
        SpeechChunk("Again,", "clause"), SpeechChunk("a new answer.", "sentence"),
    ]
    assert chunker.flush() == [SpeechChunk("Done", "final")]
    assert chunker.flush() == []


def test_flush_says_whatever_is_pending_even_without_a_sentence_end() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("Mr.") == []
    assert chunker.flush() == [SpeechChunk("Mr.", "final")]


def test_placeholders_can_be_turned_off() -> None:
    config = ChunkerConfig(code_placeholder=None, table_placeholder=None)
    text = "Intro.\n```\nx = 1\n```\n| a |\n|---|\n\n代码：\n```\ny\n```\nEnd."
    assert chunk(text, config=config) == [s("Intro."), s("代码："), f("End.")]


def test_without_a_chinese_placeholder_the_english_one_is_used() -> None:
    config = ChunkerConfig(code_placeholder_zh=None)
    assert chunk("代码如下：\n```\ny\n```\n| 名称 |\n", config=config) == [s("代码如下："), p(CODE), p(TABLE_ZH)]


def test_custom_placeholders() -> None:
    config = ChunkerConfig(code_placeholder="See the code.", table_placeholder="See the table.")
    assert chunk("```\nx\n```\n| a |", config=config) == [p("See the code."), p("See the table.")]


@pytest.mark.parametrize("make", [
    lambda: ChunkerConfig(clause_min_chars=-1), lambda: ChunkerConfig(max_chunk_chars=0),
], ids=["negative-clause-min", "zero-max-chunk"])
def test_config_rejects_nonsense(make: Callable[[], ChunkerConfig]) -> None:
    with pytest.raises(ValueError, match="must be"):
        make()


WORD = re.compile(r"[A-Za-z0-9]+|[\u4e00-\u9fff]+")
ENGLISH_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "hotel", "india", "kilo", "lima", "Mike"]
CHINESE_WORDS = ["你好", "世界", "语音", "屏幕", "模型", "回答"]
# (Markdown as the model writes it, the same as plain prose)
SEPARATORS = [(" ", " ")] * 6 + [
    (", ", ", "), (". ", ". "), ("! ", "! "), ("? ", "? "), ("; ", "; "), (": ", ": "), ("... ", "... "),
    (" e.g. ", " e.g. "), (" Dr. ", " Dr. "), (" 3.14 ", " 3.14 "), ("\n", "\n"), ("\n\n", "\n"),
    ("\n- ", "\n"), ("\n1. ", "\n"), ("\n# ", "\n"), ("，", "，"), ("。", "。"), ("！", "！"), ("……", "……"),
    ("\n```py\nzulu = 1. Yankee\n```\n", "\n"), ("\n| zulu | yankee |\n|---|---|\n", "\n"),
]
DECORATIONS: list[Callable[[str], str]] = [
    lambda w: w, lambda w: w, lambda w: f"**{w}**", lambda w: f"*{w}*", lambda w: f"`{w}`", lambda w: f"_{w}_",
    lambda w: f"[{w}](https://example.com/{w}_x)", lambda w: f"<b>{w}</b>", lambda w: f"{w} 🎉",
]


def random_answer(rng: random.Random) -> tuple[str, str]:
    """A random answer in Markdown, and the words it says in prose."""
    markdown, plain = [], []
    for _ in range(rng.randint(1, 60)):
        word = rng.choice(ENGLISH_WORDS + CHINESE_WORDS)
        markdown.append(rng.choice(DECORATIONS)(word))
        plain.append(word)
        written, said = rng.choice(SEPARATORS)
        markdown.append(written)
        plain.append(said)
    return "".join(markdown), "".join(plain)


@pytest.mark.parametrize("config", [
    DEFAULT_CONFIG, ChunkerConfig(clause_min_chars=8), ChunkerConfig(max_chunk_chars=40),
], ids=["default", "clauses", "short-chunks"])
def test_every_word_of_the_prose_is_spoken_in_order(config: ChunkerConfig) -> None:
    rng = random.Random(20240601)
    for attempt in range(150):
        markdown, plain = random_answer(rng)
        chunks = chunk_objects(markdown, random_pieces(attempt), config)
        assert chunks == chunk_objects(markdown, SPLITS["whole"], config), markdown
        spoken = " ".join(ch.text for ch in chunks if ch.kind != "placeholder")
        assert WORD.findall(spoken) == WORD.findall(plain), markdown
        for piece in chunks:
            assert piece.text == piece.text.strip() and "  " not in piece.text, piece
            assert any(ch.isalnum() for ch in piece.text), piece
            assert not re.search(r"[*`|🎉]|\]\(|http|<b>", piece.text), piece
            assert piece.kind == "placeholder" or len(piece.text) <= config.max_chunk_chars, piece


def test_a_long_answer_in_small_pieces_is_chunked_in_linear_time() -> None:
    paragraph = (
        "Here is **step** one, e.g. open [the page](https://example.com/a). Dr. Smith says 3.14 is fine! "
        "这是中文句子，包含3.14。还有问题吗？\n- a list item with `code`\n"
        "```py\nprint('x')\n```\n| a | b |\n|---|---|\n\n"
    )
    answer = (paragraph * (20_000 // len(paragraph) + 1))[:20_000]
    pieces = [answer[i:i + 3] for i in range(0, len(answer), 3)]
    chunker = SentenceChunker()
    started = time.perf_counter()
    chunks = [ch for piece in pieces for ch in chunker.feed(piece)] + chunker.flush()
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{elapsed:.2f} s for 20,000 characters"
    assert chunks == chunk_objects(answer, SPLITS["whole"])
    assert len(chunks) > 500
