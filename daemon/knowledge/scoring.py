"""How much of a question a section covers: the weighted share of the question's meaning units it holds.

BM25 ranks well but says nothing about whether the best section answers at all ("Is there parking?" still has a
best section). Coverage does: a unit is an English stem, a Chinese character or known bigram, or a synonym
group the question names; each weighs its inverse document frequency, so a word no section holds ("parking",
"咖啡") weighs most and leaves the coverage low.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from daemon.knowledge.synonyms import Synonyms
from daemon.knowledge.terms import PHRASE_ONLY, Terms

UNIGRAM_WEIGHT = 0.5
"""Chinese single characters count half: their pairs carry the words."""


@dataclass(frozen=True)
class Unit:
    alternatives: tuple[frozenset[str], ...]
    """The unit is present in a text that holds all the terms of any one alternative."""
    weight: float

    def found_in(self, present: frozenset[str]) -> bool:
        return any(alt <= present for alt in self.alternatives)


class Idf:
    """Inverse document frequency within the sections of the term's own script.

    A venue documented in both languages has each fact twice; counted over all sections, every Chinese word
    would look twice as rare as it is ("图书馆", in most Chinese sections, would outweigh "吃东西").
    """

    def __init__(self, df: Mapping[str, int], han_sections: int, other_sections: int) -> None:
        self._df = df
        self._n_han, self._n_other = max(han_sections, 1), max(other_sections, 1)

    def __call__(self, term: str) -> float:
        df = self._df.get(term, 0)
        n = self._n_han if _han(term) else self._n_other
        return math.log(1 + (max(n - df, 0) + 0.5) / (df + 0.5))

    def known(self, term: str) -> bool:
        return term in self._df


def units(found: Terms, synonyms: Synonyms, idf: Idf) -> list[Unit]:
    """A text's meaning units; terms that a synonym group covers count once, as that group."""
    present = frozenset(found.all())
    out: list[Unit] = []
    consumed: set[str] = set()
    for covered, group in synonyms.alternatives(present):
        if covered <= consumed:
            continue
        consumed |= covered | {c for t in covered for c in t if len(t) > 1 and _han(t)}
        out.append(Unit(tuple(p.terms for p in group), max(idf(t) for t in covered)))
    for word in dict.fromkeys(found.words):
        if word not in consumed and not word.isdigit() and word not in PHRASE_ONLY:
            weight = idf(word) * (UNIGRAM_WEIGHT if _han(word) else 1.0)
            out.append(Unit((frozenset({word}),), weight))
    for pair in dict.fromkeys(found.pairs):
        # A pair no section holds is most often two words' edges ("日开" in 周日开门); its characters count.
        if pair not in consumed and idf.known(pair):
            out.append(Unit((frozenset({pair}),), idf(pair)))
    return out


def coverage(question: Iterable[Unit], present: frozenset[str]) -> float:
    total = found = 0.0
    for unit in question:
        total += unit.weight
        if unit.found_in(present):
            found += unit.weight
    return found / total if total else 0.0


def _han(term: str) -> bool:
    return bool(term) and "\u3400" <= term[0] <= "\ufaff"
