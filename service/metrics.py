"""Prometheus text metrics without a client library: request counts and latency
histograms per route template, plus click-path counters. Counters are per process; with
``--workers N`` each worker reports its own (scrape them behind the balancer and sum)."""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

COUNTERS = {
    "nextclick_clicks_accepted_total": "Events appended to session click lists.",
    "nextclick_duplicate_events_total": "Events skipped because their event_id was seen.",
    "nextclick_sessions_closed_total": "Session generations closed by this process.",
    "nextclick_user_sessions_folded_total": "Closed sessions appended to a user's history.",
    "nextclick_session_rollovers_total": "Sessions closed because of the idle timeout.",
    "nextclick_sessions_swept_total": "Idle sessions closed and folded by the sweeper.",
    "nextclick_redis_unavailable_total": "Requests answered 503 because Redis was down.",
    "nextclick_rate_limited_total": "Requests refused with 429 by the rate limit.",
    "nextclick_rate_limit_errors_total": "Requests let through because the rate limiter's "
                                         "Redis failed (fail open).",
    "nextclick_requests_shed_total": "Requests refused with 503 beyond max_in_flight.",
}

#: Counters with labels: name -> help text.
LABELLED_COUNTERS = {
    "nextclick_recommendations_served_total": "Lists answered, by model version.",
    "nextclick_attributed_clicks_total": "Clicks naming the recommendation_id of a list, by "
    "the list's model version and the clicked item's position in it (0: not in the list; "
    "unknown: the list is no longer remembered).",
    "nextclick_redis_refusals_total": "Requests answered 503 because Redis was unreachable "
    "or refused, by reason (connection, timeout, oom, readonly, busy, ...).",
}

#: A callable returning extra exposition lines (e.g. state read from another process).
Collector = Callable[[], list[str]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters and histograms rendered in Prometheus exposition format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, float] = dict.fromkeys(COUNTERS, 0.0)
        self._labelled: dict[str, dict[tuple[tuple[str, str], ...], float]] = {
            name: defaultdict(float) for name in LABELLED_COUNTERS}
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        # (method, route) -> [bucket counts..., +Inf count], sum
        self._histograms: dict[tuple[str, str], list[float]] = {}
        self._collectors: list[Collector] = []
        self.started = time.time()

    def add_collector(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def inc(self, name: str, value: float = 1.0) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0.0) + value

    def inc_labelled(self, name: str, labels: dict[str, str], value: float = 1.0) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._labelled[name][key] += value

    def labelled(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        with self._lock:
            return dict(self._labelled[name])

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            histogram = self._histograms.get((method, route))
            if histogram is None:
                histogram = self._histograms[(method, route)] = [0.0] * (
                    len(LATENCY_BUCKETS) + 2)
            histogram[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            histogram[-1] += seconds

    def value(self, name: str) -> float:
        with self._lock:
            return self._counters.get(name, 0.0)

    def render(self, gauges: dict[str, tuple[str, float]] | None = None) -> str:
        lines: list[str] = []
        with self._lock:
            for name, help_text in COUNTERS.items():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter",
                          f"{name} {self._counters.get(name, 0.0):g}"]
            for name, help_text in LABELLED_COUNTERS.items():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                for key, count in sorted(self._labelled[name].items()):
                    labels = ",".join(f'{label}="{_escape(value)}"' for label, value in key)
                    lines.append(f"{name}{{{labels}}} {count:g}")
            lines += ["# HELP nextclick_http_requests_total HTTP requests by route and status.",
                      "# TYPE nextclick_http_requests_total counter"]
            for (method, route, status), count in sorted(self._requests.items()):
                lines.append(f'nextclick_http_requests_total{{method="{method}",'
                             f'route="{_escape(route)}",status="{status}"}} {count}')
            lines += ["# HELP nextclick_http_request_duration_seconds Request latency.",
                      "# TYPE nextclick_http_request_duration_seconds histogram"]
            for (method, route), histogram in sorted(self._histograms.items()):
                labels = f'method="{method}",route="{_escape(route)}"'
                cumulative = 0.0
                for bound, in_bucket in zip(LATENCY_BUCKETS, histogram, strict=False):
                    cumulative += in_bucket
                    lines.append(f'nextclick_http_request_duration_seconds_bucket{{{labels},'
                                 f'le="{bound:g}"}} {cumulative:g}')
                cumulative += histogram[len(LATENCY_BUCKETS)]
                lines.append(f'nextclick_http_request_duration_seconds_bucket{{{labels},'
                             f'le="+Inf"}} {cumulative:g}')
                lines.append(f"nextclick_http_request_duration_seconds_sum{{{labels}}} "
                             f"{histogram[-1]:.6f}")
                lines.append(f"nextclick_http_request_duration_seconds_count{{{labels}}} "
                             f"{cumulative:g}")
        for name, (help_text, gauge) in (gauges or {}).items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {gauge:g}"]
        for collector in self._collectors:
            lines += collector()
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request, labelled by the matched route
    template (``/sessions/{session_id}/events``), so ids never become label values."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope.get("method", ""), template, status,
                                         time.perf_counter() - started)
