"""Lossless speculative decoding without a second model.

Kiosk answers quote the venue text, the conversation and earlier answers a lot. `NgramIndex` proposes the tokens
that followed the longest recent match of the answer's last tokens in those texts; `DraftLength` sizes each
proposal by how well the last ones were accepted; `Speculation` hands the proposals to llama-cpp-python's own
generation loop, which evaluates the sampled token and the proposal in one batch and keeps a proposed token only
when the sampler, run at that position exactly as without a proposal, picks it. So the text is the text the
model would have written token by token (see docs/protocol.md, "Speculative decoding").
"""

from daemon.speculative.ngram import NgramIndex
from daemon.speculative.policy import DraftLength
from daemon.speculative.verify import RecentAnswers, Speculation, SpeculationStats

__all__ = ["DraftLength", "NgramIndex", "RecentAnswers", "Speculation", "SpeculationStats"]
