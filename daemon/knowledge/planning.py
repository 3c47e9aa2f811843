"""Deciding how a question is answered: the curated FAQ text, the model from a section, the fallback, or the
model on its own (see docs/protocol.md, "Venue knowledge")."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.knowledge.folder import Section
from daemon.knowledge.index import Hit, KnowledgeIndex
from daemon.knowledge.intent import is_about_venue, is_general
from daemon.knowledge.scoring import coverage
from daemon.knowledge.terms import language, terms
from daemon.messages import KnowledgeKind, Source

FAQ_MIN = 0.75
"""An FAQ heading must hold this share of the question's meaning to be answered with its text directly..."""
FAQ_REVERSE_MIN = 0.6
"""...and the question this share of the heading's: "When do you open on Sunday?" is not "When do you open?"."""
GROUNDED_MIN = 0.5
"""A section that holds less of the question does not answer it."""
NEAR_MIN = 0.25
"""A question this close to some section is about the venue even without words that say so."""

GROUNDING_RULES = (
    "Answer the visitor's question using only the venue information below. Answer briefly, in the language of "
    "the question. Do not add facts, times, prices or places that the information does not state. If the "
    "information does not answer the question, say only that you don't have that information.")


@dataclass(frozen=True)
class Plan:
    kind: KnowledgeKind
    lang: str
    sources: tuple[Source, ...] = ()
    text: str = ""
    """faq and fallback: the whole answer."""
    system_prompt: str = ""
    """grounded and ordinary: the system message the model reads."""
    evidence: str = ""
    """grounded: what every number or time of the answer must come from (the sections and the question)."""


@dataclass(frozen=True)
class Policy:
    """The knowledge settings a plan follows (from daemon.settings.Settings)."""

    system_prompt: str
    fallback_en: str
    fallback_zh: str
    only: bool = False


def grounded_system_prompt(system_prompt: str, section: Section) -> str:
    """The system message of a grounded answer: the same text for every question a section answers, so its
    model state is computed once (daemon.prefix_states)."""
    heading = " > ".join((*section.parents, section.title))
    return f"{system_prompt}\n\n{GROUNDING_RULES}\n\nVenue information ({heading}):\n{section.body}"


def plan_answer(index: KnowledgeIndex | None, question: str, policy: Policy, previous: str = "") -> Plan:
    lang = language(question)
    if index is None:
        return Plan("ordinary", lang, system_prompt=policy.system_prompt)
    hits = index.search(question, 3)
    if previous and not _answers(hits):  # a follow-up ("And on Sunday?") may lean on the question before it
        hits = index.search(f"{previous} {question}", 3) or hits
    top = hits[0] if hits else None
    if top is not None and _is_faq_match(index, top, question):
        return Plan("faq", lang, (_source(top.section),), text=top.section.body)
    if top is not None and top.coverage >= GROUNDED_MIN:
        section = top.section
        return Plan("grounded", lang, (_source(section),),
                    system_prompt=grounded_system_prompt(policy.system_prompt, section),
                    evidence=f"{section.title}\n{section.body}\n{question}")
    near = top is not None and top.coverage >= NEAR_MIN
    if not policy.only and (is_general(question) or not (near or is_about_venue(question))):
        return Plan("ordinary", lang, system_prompt=policy.system_prompt)
    return Plan("fallback", lang, text=policy.fallback_zh if lang == "zh" else policy.fallback_en)


def _answers(hits: list[Hit]) -> bool:
    return bool(hits) and hits[0].coverage >= GROUNDED_MIN


def _is_faq_match(index: KnowledgeIndex, hit: Hit, question: str) -> bool:
    if not hit.section.is_faq or hit.title_coverage < FAQ_MIN:
        return False
    asked = frozenset(terms(question).all())
    return coverage(index.question_units(hit.section.title), asked) >= FAQ_REVERSE_MIN


def _source(section: Section) -> Source:
    return Source(section.file, section.title)
