"""Deciding how a question is answered: the curated FAQ text, the model from a section, the fallback, or the
model on its own (see docs/protocol.md, "Venue knowledge")."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.knowledge.folder import Section
from daemon.knowledge.index import Hit, KnowledgeIndex
from daemon.knowledge.intent import is_about_venue, is_general, is_sum
from daemon.knowledge.quotes import best_quote, best_sentence
from daemon.knowledge.scoring import coverage
from daemon.knowledge.terms import language, terms
from daemon.messages import KnowledgeKind, Source

FAQ_MIN = 0.75
"""An FAQ heading must hold this share of the question's meaning to be answered with its text directly..."""
FAQ_REVERSE_MIN = 0.6
"""...and the question this share of the heading's: "When do you open on Sunday?" is not "When do you open?"...
"""
FAQ_LEADING_MIN = 0.4
"""...or, when the entry leads every other section clearly, its heading and keywords this share."""
GROUNDED_MIN = 0.5
"""A section that holds less of the question does not answer it..."""
GROUNDED_CLEAR_MIN = 0.4
CLEAR_LEAD = 0.12
"""...unless it holds this much and leads every other section of its language by this score: a question that
tells a story around its point ("I forgot my umbrella here yesterday, how do I get it back?") covers less."""
MISSING_TOPIC_MIN = 0.8
"""A question on a topic no section mentions ("可以抽烟吗" where nothing says 吸烟) is answered only when the
rest of it is this well covered."""
NEAR_MIN = 0.25
"""A question this close to some section is about the venue even without words that say so."""

SEARCHED = 5
"""Hits looked at: the best, and enough of its rivals to tell whether it leads clearly."""

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
    """grounded: what the answer must be supported by (the sections' headings and text)."""
    question: str = ""
    quote: str = ""
    """grounded: the section's own sentences that answer the question, said when the model's answer fails."""
    about: str = ""
    """grounded: the sentence of the section the question is most about (what a yes or no must agree with)."""

    @property
    def canned(self) -> bool:
        """The answer is a fixed text (an FAQ entry or the fallback): no model is needed."""
        return self.kind in ("faq", "fallback")


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
    if index is None or (is_sum(question) and not policy.only):
        return Plan("ordinary", lang, system_prompt=policy.system_prompt)
    hits = index.search(question, SEARCHED)
    if previous and not _answers(hits):  # a follow-up ("And on Sunday?") may lean on the question before it
        hits = index.search(f"{previous} {question}", SEARCHED) or hits
    top = hits[0] if hits else None
    # A topic no section mentions leaves the question unanswered, however well its other words match.
    undocumented = top is not None and top.coverage < MISSING_TOPIC_MIN and bool(index.missing_topics(question))
    if top is not None and not undocumented and _is_faq_match(index, hits, question):
        return Plan("faq", lang, (_source(top.section),), text=top.section.body)
    if top is not None and not undocumented and _answers(hits):
        section, weight = top.section, index.term_weight
        return Plan("grounded", lang, (_source(section),),
                    system_prompt=grounded_system_prompt(policy.system_prompt, section),
                    evidence=f"{section.title}\n{section.body}", question=question,
                    quote=best_quote(section, question, weight),
                    about=best_sentence(section, question, weight))
    near = undocumented or (top is not None and top.coverage >= NEAR_MIN)
    if not policy.only and (is_general(question) or not (near or is_about_venue(question))):
        return Plan("ordinary", lang, system_prompt=policy.system_prompt)
    return Plan("fallback", lang, text=policy.fallback_zh if lang == "zh" else policy.fallback_en)


def _answers(hits: list[Hit]) -> bool:
    """The best hit covers enough of the question to answer it (see GROUNDED_MIN, GROUNDED_CLEAR_MIN)."""
    if not hits:
        return False
    top = hits[0]
    if top.coverage >= GROUNDED_MIN:
        return True
    return top.coverage >= GROUNDED_CLEAR_MIN and _leads(hits)


def _is_faq_match(index: KnowledgeIndex, hits: list[Hit], question: str) -> bool:
    """The best section is an FAQ entry and answers the question: its curated text is the answer. Either its
    heading and keywords hold most of the question, and the question most of the heading, or the entry leads
    clearly and its heading still holds a good part of the question."""
    top = hits[0]
    if not top.section.is_faq or not _answers(hits):
        return False
    asked = frozenset(terms(question).all())
    reverse = coverage(index.question_units(top.section.title), asked)
    if top.title_coverage >= FAQ_MIN and reverse >= FAQ_REVERSE_MIN:
        return True
    return top.title_coverage >= FAQ_LEADING_MIN and _leads(hits)


def _leads(hits: list[Hit]) -> bool:
    top = hits[0]
    rivals = [h.score for h in hits[1:] if h.section.lang == top.section.lang]
    return top.score - max(rivals, default=0.0) >= CLEAR_LEAD


def _source(section: Section) -> Source:
    return Source(section.file, section.title)
