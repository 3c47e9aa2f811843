"""The daemon's Prometheus metrics (docs/protocol.md, "Metrics"): vLLM's meanings, a `kioskd_` prefix, base units.

One `Metrics` per app with a registry of its own (several daemons in one test process must not share counts).
The rest of the daemon tells it about events through a few methods (an answer finished, an error was sent, a
history write waited or was lost, a voice stage took so long); what can be read at any moment (the waiting line,
open WebSockets, voice, model) is read at scrape time through `watch`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from daemon import __version__
from daemon.messages import Busy, Finished
from daemon.metrics.tally import DayTally

# vLLM's buckets (vllm/v1/metrics/loggers.py), so the same dashboards' quantiles mean the same.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)
QUEUE_BUCKETS = (0.0, *LATENCY_BUCKETS)  # most answers wait not at all: keep those apart from "under 0.3 s"
# Voice stages have no vLLM counterpart: buckets around what a kiosk's voice takes (docs/benchmarks.md).
SPEECH_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
CALLERS_FAULTS = frozenset({"bad_json", "bad_frame", "unknown_type", "question_too_long", "frame_too_large",
                            "rate_limited", "unknown_session", "generation_in_progress", "prompt_too_long"})
"""Error frame codes that say the client asked wrongly, not that the kiosk is in trouble (not a /status
last_error; HTTP errors are judged by their status instead: 4xx)."""


@dataclass(frozen=True)
class Watched:
    """What the gauges read at scrape time."""

    waiting: Callable[[], int]
    running: Callable[[], int]
    websockets: Callable[[], int]
    voice_available: Callable[[], bool]
    model_loaded: Callable[[], bool]


def ttft_seconds(finished: Finished) -> float | None:
    """The answer's time to first text; None when it showed none (cancelled before its first token)."""
    return finished.timings.ttft_ms / 1000 if finished.text else None


class Metrics:
    def __init__(self, tally: DayTally | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.today = tally
        """Today's tally for GET /status (None: not kept)."""
        self.model_sha256 = ""
        """The served model file's sha256, once known ("" until then)."""
        self.model_name = ""
        """The served model's name: its file's, where the setting is a link ("" until loaded)."""
        self._started = time.monotonic()
        self._model = Info("kioskd_model", "The model served and the daemon's version", registry=self.registry)
        self.model_known("", "")
        self._add_answer_histograms(self.registry)
        self._add_voice_histograms(self.registry)
        self._add_counters(self.registry)

    def _add_answer_histograms(self, r: CollectorRegistry) -> None:
        self._ttft = Histogram("kioskd_time_to_first_token_seconds", "Time from when the model took an answer up "
                               "(after any wait) to its first text", buckets=TTFT_BUCKETS, registry=r)
        self._tpot = Histogram("kioskd_time_per_output_token_seconds", "Mean time per generated token after the "
                               "first, one observation per answer of two or more tokens", buckets=TPOT_BUCKETS,
                               registry=r)
        self._e2e = Histogram("kioskd_e2e_request_latency_seconds", "Whole answer: waiting for the model plus "
                              "writing it", buckets=LATENCY_BUCKETS, registry=r)
        self._queue = Histogram("kioskd_request_queue_time_seconds", "Time a model answer waited for the model",
                                buckets=QUEUE_BUCKETS, registry=r)

    def _add_voice_histograms(self, r: CollectorRegistry) -> None:
        self._recognition = Histogram("kioskd_speech_recognition_seconds", "From the end of a spoken question's "
                                      "audio to its final transcript", buckets=SPEECH_BUCKETS, registry=r)
        self._endpoint = Histogram("kioskd_speech_endpoint_seconds", "From the end of speech to the decision that "
                                   "the question is over (audio time)", buckets=SPEECH_BUCKETS, registry=r)
        self._rtf = Histogram("kioskd_tts_real_time_factor", "Speech synthesis time over the duration of the audio "
                              "made, per sentence (below 1: faster than real time)", buckets=RTF_BUCKETS, registry=r)

    def _add_counters(self, r: CollectorRegistry) -> None:
        self._prompt = Counter("kioskd_prompt_tokens", "Prompt tokens the model evaluated for answers", registry=r)
        self._cached = Counter("kioskd_prompt_tokens_cached", "Prompt tokens of answers reused from the KV cache, "
                               "stored prefix states or a read-ahead instead of evaluated", registry=r)
        self._generated = Counter("kioskd_generation_tokens", "Tokens the model generated for answers", registry=r)
        self._success = Counter("kioskd_request_success", "Answers finished, by finish reason", ["finished_reason"],
                                registry=r)
        self._errors = Counter("kioskd_errors", "Errors sent to clients (error frames, HTTP error bodies), by code",
                               ["code"], registry=r)
        self._busy = Counter("kioskd_busy_refusals", "Questions refused because the waiting line was full",
                             registry=r)
        self._deferred = Counter("kioskd_history_writes_deferred", "Turns the history database refused for now, "
                                 "kept in memory and retried", registry=r)
        self._lost = Counter("kioskd_history_writes_failed", "Turns that could not be stored at all", registry=r)
        self._kinds = Counter("kioskd_knowledge_answers", "Answers by how they were made", ["kind"], registry=r)
        self._proposed = Counter("kioskd_speculative_proposed_tokens", "Tokens proposed by n-gram lookup for the "
                                 "model to check (speculative decoding)", registry=r)
        self._accepted = Counter("kioskd_speculative_accepted_tokens", "Proposed tokens the model's sampler "
                                 "picked itself, so they cost no step of their own", registry=r)
        self._batches = Counter("kioskd_speculative_batches", "Batches that checked a proposal (each also wrote "
                                "one token of its own)", registry=r)

    def watch(self, watched: Watched) -> None:
        """Gauges read at scrape time from the app's own state."""
        gauges = {"kioskd_num_requests_waiting": ("Questions waiting for the model", watched.waiting),
                  "kioskd_num_requests_running": ("Answers being written (1 at most for the local model, which also "
                                                  "counts reading ahead for one; up to upstream_parallel upstream)",
                                                  watched.running),
                  "kioskd_websockets_open": ("Kiosk WebSockets open", watched.websockets),
                  "kioskd_voice_available": ("1 when the microphone, speaker and voice models work",
                                             lambda: int(watched.voice_available())),
                  "kioskd_model_loaded": ("1 once the model is loaded and ready for questions",
                                          lambda: int(watched.model_loaded()))}
        for name, (doc, read) in gauges.items():
            Gauge(name, doc, registry=self.registry).set_function(read)

    def follow_upstream(self, is_up: Callable[[], bool]) -> None:
        """With ENGINE=upstream: a gauge of whether the upstream is up, the failovers and the answers by engine
        (told through `engine_failover` and `engine_answered`)."""
        r = self.registry
        Gauge("kioskd_upstream_up", "1 while the upstream inference server answers (0: the local model or the "
              "upstream_unavailable error answers)", registry=r).set_function(lambda: int(is_up()))
        self._failovers = Counter("kioskd_engine_failovers", "Times the upstream was marked down and questions "
                                  "left it, by reason", ["reason"], registry=r)
        for reason in ("unreachable", "refused", "first_token_timeout", "lost"):
            self._failovers.labels(reason)
        self._by_engine = Counter("kioskd_engine_answers", "Answers the model wrote, by the engine that wrote "
                                  "them (upstream or local)", ["engine"], registry=r)
        for engine in ("upstream", "local"):
            self._by_engine.labels(engine)

    def engine_failover(self, reason: str) -> None:
        self._failovers.labels(reason).inc()

    def engine_answered(self, engine: str) -> None:
        self._by_engine.labels(engine).inc()

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def model_known(self, model: str, sha256: str) -> None:
        self.model_sha256 = sha256
        self.model_name = model
        self._model.info({"model": model, "sha256": sha256, "version": __version__})

    def answered(self, finished: Finished) -> None:
        """An answer ended (done frame or OpenAI completion), its timings computed."""
        t, usage = finished.timings, finished.usage
        self._success.labels(finished.reason).inc()
        self._kinds.labels(finished.knowledge).inc()
        self._e2e.observe((t.queue_ms + t.total_ms) / 1000)
        if (ttft := ttft_seconds(finished)) is not None:
            self._ttft.observe(ttft)
        if usage.prompt_tokens:  # the model was asked (not a venue FAQ or the fallback)
            self._queue.observe(t.queue_ms / 1000)
            self._prompt.inc(t.prompt_eval_tokens)
            self._cached.inc(max(0, usage.prompt_tokens - t.prompt_eval_tokens))
        self._generated.inc(usage.completion_tokens)
        self._proposed.inc(t.speculative_proposed)
        self._accepted.inc(t.speculative_accepted)
        self._batches.inc(t.speculative_batches)
        if usage.completion_tokens >= 2 and t.tokens_per_s > 0:
            self._tpot.observe(1 / t.tokens_per_s)
        if self.today is not None:
            self.today.answered(ttft)

    def error(self, code: str, message: str, *, callers_fault: bool | None = None) -> None:
        """An error was sent to a client; one the client did not cause (`callers_fault`, by default judged by
        its code) becomes the day's last error."""
        self._errors.labels(code).inc()
        if code == Busy.code:
            self._busy.inc()
        if callers_fault is None:
            callers_fault = code in CALLERS_FAULTS
        if not callers_fault and self.today is not None:
            self.today.failed(code, message)

    def history_deferred(self) -> None:
        self._deferred.inc()

    def history_failed(self, turns: int = 1) -> None:
        self._lost.inc(turns)

    def speech_recognized(self, seconds: float) -> None:
        self._recognition.observe(max(0.0, seconds))

    def speech_endpoint(self, seconds: float) -> None:
        self._endpoint.observe(max(0.0, seconds))

    def sentence_synthesized(self, synth_s: float, audio_s: float) -> None:
        if audio_s > 0:
            self._rtf.observe(synth_s / audio_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
