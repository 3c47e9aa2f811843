"""Thinking while the visitor is still talking: a spoken question is read into the model as it is being said,
so the answer starts after reading only the last words (see speech.py for when, engine_prefill.py for how)."""

from daemon.prefill.speech import STABLE_S, SpeechPrefill

__all__ = ["STABLE_S", "SpeechPrefill"]
