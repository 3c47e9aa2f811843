"""Search terms for English and Chinese text: what the index stores and what a question is matched with.

English: words, lower-cased and stemmed (Snowball), stop words left out. Chinese: every character (unigram) and
every pair of neighbouring characters (bigram) of a run of Han characters; FTS5's own tokenizers cannot match
two-character words. Full-width forms (ＡＢＣ，１２３) are folded to their ASCII twins first (NFKC).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"[{_HAN}]+|[a-z]+|[0-9]+")
_HAN_CHAR = re.compile(rf"[{_HAN}]")
# "can't", "can not": one word, so that a phrase like "cannot find" (lost) can hold it.
_CANNOT = re.compile(r"\bcan(?:'|’)?t\b|\bcan not\b")
PHRASE_ONLY = frozenset({"cannot"})
"""Terms that may complete a synonym phrase but weigh nothing on their own."""
# "wi-fi", "e-mail", "check-in": one word, as visitors write it either way.
_HYPHENATED = re.compile(r"(?<=[a-z])[-‐](?=[a-z])")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


EN_STOP = _words("""
a an the and or but if then so of to in on at by for with from about as into onto over under up down out off
is are was were be been being am do does did doing done have has had having will would shall should can could
may might must i me my mine we us our ours you your yours he him his she her hers it its they them their this
that these those there here what which who whom whose when where why how all any some no not yes please
hi hello hey thanks thank ok okay tell know want need like get got just also very really much many more most
guy guys let lets one use using thing things anything something everything s t d ll m re ve don doesn didn
isn aren wasn won can couldn shouldn
""")
# Question words (when, where) are stop words for matching; the question's topic carries the meaning.

ZH_STOP = frozenset("的了吗呢吧啊呀么嘛哦是在我你您他她它们这那个和与及或就都也还要会能可以请问"
                    "一下些把被让给对从到为得地着过很什怎哪谁吗哈呃里儿")


# Question words carry no topic, like "when" and "where" among EN_STOP; cut out before characters pair up, so
# "电话是多少" matches the contact section on 电话 alone.
_ZH_QUESTION_WORDS = re.compile("星期几|礼拜几|周几|多少|多久|多长时间|多长|什么|怎么|怎样|如何|哪里|哪儿|哪个|哪些|"
                                "为什么|是不是|有没有|能不能|可不可以|行不行|好不好|请问")


@dataclass(frozen=True)
class Terms:
    """A text's search terms: `words` (English stems and Chinese unigrams) and `pairs` (Chinese bigrams)."""

    words: tuple[str, ...]
    pairs: tuple[str, ...]

    def all(self) -> tuple[str, ...]:
        return self.words + self.pairs


def normalize(text: str) -> str:
    return _CANNOT.sub("cannot", _HYPHENATED.sub("", unicodedata.normalize("NFKC", text).lower()))


def language(text: str) -> str:
    """'zh' when the text has Han characters (a visitor's Chinese question may hold English names), else 'en'."""
    return "zh" if _HAN_CHAR.search(text) else "en"


@lru_cache(maxsize=1)
def _stemmer() -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    return str(_stemmer().stemWord(word))


def terms(text: str) -> Terms:
    words: list[str] = []
    pairs: list[str] = []
    for run in _RUNS.findall(_ZH_QUESTION_WORDS.sub(" ", normalize(text))):
        if _HAN_CHAR.match(run):
            words += [c for c in run if c not in ZH_STOP]
            pairs += list(_bigrams(run))
        elif run[0].isdigit():
            words.append(run.lstrip("0") or "0")
        elif run not in EN_STOP:
            words.append(stem(run))
    return Terms(tuple(words), tuple(pairs))


# Characters that end or begin the words beside them rather than form one: a pair holding one ("书可" in
# 书可以借, "的书") is two words' edges and would match by chance.
_EDGE = frozenset("的了吗呢吧啊呀嘛哦么是我你您他她它们这那和与及或可以请很被把让吧")


def _bigrams(run: str) -> Iterator[str]:
    for first, second in itertools.pairwise(run):
        if first not in _EDGE and second not in _EDGE and (first not in ZH_STOP or second not in ZH_STOP):
            yield first + second


def index_text(text: str) -> str:
    """The pre-tokenized column: terms separated by spaces (FTS5's unicode61 keeps each one whole)."""
    return " ".join(terms(text).all())
