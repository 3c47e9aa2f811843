"""An OpenAI-compatible inference server as the engine (ENGINE=upstream), with failover to the local model."""

from daemon.upstream.failover import EngineState, FailoverEngine, engine_state

__all__ = ["EngineState", "FailoverEngine", "engine_state"]
