"""The section's own words for a question: the sentences that answer it, quoted when the model's answer
cannot be trusted (daemon.knowledge.claims, daemon.knowledge.support).

Quoting the operator's text is never an invention; it is less fluent than the model and keeps the section's
language, so it stands in only when the model's answer fails its checks.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.knowledge.claims import sentences
from daemon.knowledge.folder import Section
from daemon.knowledge.terms import terms

Weight = Callable[[str], float]

SHORT_BODY = 320
"""A body this short (or an FAQ entry's curated answer) is quoted whole."""
SECOND_SENTENCE_SHARE = 0.8
"""A second sentence is quoted too when it holds this share of what the best one holds of the question.

Sentences are ranked on the question's own words weighed by rarity, not on synonym groups: a section's keyword
group ("holiday, Christmas, ...") is in every sentence of it and would tell none apart."""


def best_quote(section: Section, question: str, weight: Weight) -> str:
    """The sentences of `section` that best cover the question's units, in their order in the section."""
    body = section.body.strip()
    if section.is_faq or len(body) <= SHORT_BODY:
        return body
    parts = sentences(body)
    ranked = _ranked(parts, question, weight)
    chosen = ranked[:1]
    if len(ranked) > 1 and ranked[1][1] >= SECOND_SENTENCE_SHARE * ranked[0][1] > 0:
        chosen.append(ranked[1])
    return " ".join(parts[i] for i, _ in sorted(chosen))


def best_sentence(section: Section, question: str, weight: Weight) -> str:
    """The one sentence of `section` the question is most about (the first when none covers any of it)."""
    parts = sentences(section.body)
    ranked = _ranked(parts, question, weight)
    return parts[ranked[0][0]] if ranked else ""


def _ranked(parts: list[str], question: str, weight: Weight) -> list[tuple[int, float]]:
    asked = set(terms(question).all())
    scores = [(i, sum(weight(t) for t in asked & set(terms(s).all()))) for i, s in enumerate(parts)]
    return sorted(scores, key=lambda pair: (-pair[1], pair[0]))
