"""What a grounded answer claims beyond its numbers: whether it says yes where its section says no, and whether
it says anything at all that the visitor did not already say.

A small model answers "Are you open on Christmas Day?" with "Yes, the library is open on Christmas Day" when
its section says the library is closed then, and "Can I renew from home?" with a bare "Yes.". Neither states a
number the support check could catch; both are caught here, and the answer is replaced by the section's own
words (daemon.knowledge.quotes).
"""

from __future__ import annotations

import re

from daemon.knowledge.facts import facts
from daemon.knowledge.terms import normalize, terms

# A sentence ends at its stop; an English stop must be followed by a space (not "9.30", not "example.org").
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=\.)(?=\s)|\n+")
_NEGATIVE = re.compile(
    r"\b(?:no|not|never|none|nothing|nobody|closed|cannot|without|only|except|unless|forbidden|prohibited|"
    r"banned|neither|nor)\b|n't\b|n’t\b"
    r"|不|没|未|无(?!线|障碍)|闭馆|禁止|只能|只有|除")


_ASKS_AMOUNT = re.compile(
    r"\bhow (?:much|many|long|old|late|early)\b|\bwhat time\b|\b(?:price|prices|cost|costs|fee|fees)\b"
    r"|多少|几点|多久|多长|几[本个天点岁楼层次小件张台位]|价格|费用|收费|几号")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def negative(sentence: str) -> bool:
    """The sentence denies or restricts something ("closed", "not", "only", "不", "只能")."""
    return bool(_NEGATIVE.search(normalize(sentence)))


def contradicts(claim: str, evidence: list[str], question: str, about: str = "", first: bool = False) -> bool:
    """The claim's polarity differs from the sentence it answers: for the answer's first sentence, or one that
    only echoes the question, that is `about` (the sentence the question is most about); for the others the
    evidence sentence the claim echoes most. "Yes, open on Christmas Day" against "The library is closed ... on
    Christmas Day"; "可以吃东西" against "只能在一楼...吃东西"."""
    claimed = set(terms(claim).all()) - set(terms(question).all())
    reference = (about or None) if first or not claimed else _closest(claimed, evidence)
    return reference is not None and negative(claim) != negative(reference)


def adds_nothing(answer: str, question: str, evidence: str) -> bool:
    """The answer holds no term and no number of its section that the question did not hold already ("Yes.",
    "可以办卡。"); a number counts in any form ("十点" for "10:00")."""
    said = set(terms(answer).all()) - set(terms(question).all())
    if said & set(terms(evidence).all()):
        return False
    asked = set().union(*facts(question))
    return not any(forms.isdisjoint(asked) for forms in facts(answer))


def lacks_amount(answer: str, question: str, evidence: str) -> bool:
    """The question asks how much, how many, how long or what time, the section states numbers, and the answer
    none ("I don't live in Riverside. How much is a card?" answered "It is free for residents")."""
    return bool(_ASKS_AMOUNT.search(normalize(question))) and bool(facts(evidence)) and not facts(answer)


def asks_back(answer: str) -> bool:
    """The answer ends in a question: a small model that echoes the visitor's question has not answered it."""
    return answer.rstrip().endswith(("?", "？"))


def _closest(claimed: set[str], evidence: list[str]) -> str | None:
    best, best_overlap = None, 0
    for sentence in evidence:
        overlap = len(claimed & set(terms(sentence).all()))
        if overlap > best_overlap:
            best, best_overlap = sentence, overlap
    return best
