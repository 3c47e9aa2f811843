"""Prometheus metrics and the fleet status line (GET /metrics, GET /status): see docs/protocol.md."""

from daemon.metrics.instruments import Metrics, Watched
from daemon.metrics.tally import DayTally

__all__ = ["DayTally", "Metrics", "Watched"]
