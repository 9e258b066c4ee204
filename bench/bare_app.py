"""Baseline receiver for `make bench`: a bare Flask route that reads the body and answers 202.

gunicorn serves it with the same settings as `meetinghooks serve` (bench/harness.py builds
both command lines from the same function), so the ratio to it isolates our work per request.
"""

from __future__ import annotations

from flask import Flask, Response, request

app = Flask(__name__)


@app.post("/v1/events")
def events() -> Response:
    """Read the body and answer 202, as the real endpoint does after its commit."""
    request.get_data()
    return Response('{"id":"evt_bare"}', status=202, mimetype="application/json")


@app.get("/healthz")
def healthz() -> Response:
    """Answer 200 once gunicorn is up."""
    return Response("ok", mimetype="text/plain")
