"""Every operation of our own /openapi.json, fuzzed by schemathesis in-process (no server).

The document is read from the app, so a new or changed operation is covered without editing
this file. Requests carry a token of a user with every scope and a seeded history (meetings,
deliveries, another user's rows); platform events carry a valid signature over the exact
bytes sent. Every response must be free of 5xx, every error in the SPEC's shape, and each
answer must conform to what the document says of it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.config import Settings
from receiver import create_app
from tests.hostile import error_shape
from tests.hostile.conftest import count_case
from tests.platform_events import signed_bytes_headers

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flask import Flask
    from schemathesis import Case
    from schemathesis.core.transport import Response

    from tests.analytics_fixture import History
    from tests.conftest import Account

SIGNED_PATH = "/v1/events"  # the one operation authenticated by a signature, not a token


def _served_document() -> dict[str, Any]:
    # Only the document is read here: an app on an unused in-memory database serves it.
    app = create_app(
        Settings(
            database_url="sqlite://",
            broker_url="memory://",
            public_base_url="https://meet.example.test",
            rate_limit_api=None,
            rate_limit_ingest=None,
        )
    )
    document: dict[str, Any] = app.test_client().get("/openapi.json").get_json()
    return with_path_parameters(document)


def with_path_parameters(document: dict[str, Any]) -> dict[str, Any]:
    """Declare as strings the path parameters an operation names but does not describe.

    schemathesis refuses an operation whose path has an undeclared `{name}`; such an operation
    is still reachable by anyone, so it is fuzzed with any string there rather than skipped.
    """
    for path, item in document.get("paths", {}).items():
        names = re.findall(r"{([^}]+)}", path)
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            declared = {
                p.get("name")
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if p.get("in") == "path"
            }
            operation.setdefault("parameters", []).extend(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in names
                if name not in declared
            )
    return document


class CurrentApp:
    """A WSGI app that forwards to the app of the running test (each test has its own)."""

    app: Flask | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.app is not None, "the `current_app` fixture sets the app"
        return self.app(environ, start_response)


CURRENT = CurrentApp()
schema = schemathesis.openapi.from_dict(_served_document())
# Every request, the checks' own probes included, goes to the test's app in-process.
schema.app = CURRENT


def error_body_in_spec_shape(ctx: Any, response: Response, case: Case) -> bool | None:
    """Every 4xx and 5xx is JSON in SPEC 3's shape (presenter links may answer a page)."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    path = case.formatted_path
    if error_shape.presenter_page(path, response.status_code, content_type):
        return None
    found = error_shape.problems(response.status_code, content_type, response.content)
    assert not found, "; ".join(found)
    return None


ALWAYS = [not_a_server_error, error_body_in_spec_shape, ignored_auth]
# Held only where the document describes its answers: an operation that gives a schema for a
# success says what it returns, and from then on every status, content type, header and body
# it answers must be documented (a bare `{"description": ...}` promises nothing to check).
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def documents_responses(case: Case) -> bool:
    """Say whether the operation describes a success response's content."""
    responses = case.operation.definition.raw.get("responses", {})
    return any(
        str(code).startswith("2") and ("content" in answer or "$ref" in answer)
        for code, answer in responses.items()
    )


def _signed_call(case: Case) -> dict[str, Any]:
    """Sign the bytes this case will send, as the platform does; return the call's arguments."""
    if isinstance(case.body, NotSet):
        raw = b""
    elif isinstance(case.body, bytes):  # negative cases may send bytes that are not JSON
        raw = case.body
    else:
        raw = json.dumps(case.body).encode()
    # The case's own media type is sent as its Content-Type.
    return {"data": raw, "headers": signed_bytes_headers(raw)}


@pytest.fixture
def seeded(app: Flask, full_history: History, alice: Account) -> Iterator[Account]:
    CURRENT.app = app
    yield alice
    CURRENT.app = None


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_operation_survives_generated_requests(
    case: Case, seeded: Account, request: pytest.FixtureRequest
) -> None:
    count_case(request)
    signed = case.path == SIGNED_PATH
    call = _signed_call(case) if signed else {"headers": dict(seeded.headers)}
    checks = ALWAYS + (CONFORMANCE if documents_responses(case) else [])
    case.call_and_validate(checks=checks, **call)
