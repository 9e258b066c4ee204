"""Count and time every request the receiver answers, by route template and status.

The route is Flask's URL rule (`/v1/meetings/<int:meeting_id>`), never the path a client sent,
and an unknown method is `other`: no request can add a label value of its own choosing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from flask import g, request
from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from flask import Flask, Response

UNMATCHED: Final = "unmatched"  # no route: a 404, or a 405 before routing
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STARTED: Final = "meetinghooks_request_started"

REQUESTS = Counter(
    "meetinghooks_http_requests",
    "HTTP requests answered by the receiver, by method, route template and status code",
    ["method", "route", "status"],
)
DURATION = Histogram(
    "meetinghooks_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def install(app: Flask) -> None:
    """Time every request from before any other hook (rate limits included) to its response."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_count)


def route_label() -> str:
    """Return the current request's route template, or `unmatched`."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED


def method_label() -> str:
    """Return the request's method when it is a standard one, else `other`."""
    return request.method if request.method in METHODS else "other"


def _start() -> None:
    g.setdefault(_STARTED, time.perf_counter())


def _count(response: Response) -> Response:
    method, route = method_label(), route_label()
    REQUESTS.labels(method=method, route=route, status=str(response.status_code)).inc()
    started: float | None = g.get(_STARTED)
    if started is not None:
        DURATION.labels(method=method, route=route).observe(time.perf_counter() - started)
    return response
