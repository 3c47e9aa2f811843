"""Venue knowledge: the operator's Markdown folder, searched for every question (see docs/protocol.md).

The rest of the daemon uses four names: `VenueKnowledge` (the index in force, opened at start and replaced on
reload), `Plan` (how a question is answered: faq, grounded, fallback or ordinary), `KnowledgeAnswer` (delivers a
plan, checking a grounded answer against its sections) and `KnowledgeError` (a folder that cannot be used).
"""
