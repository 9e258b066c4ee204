"""Every route, from the URL map, with hostile bodies, header values and query strings.

A route that reads a body refuses an oversized one with 413, JSON nested past the limit and
bytes that are not UTF-8 with 400; a route that reads none answers as it would without one.
Any header value and any query string gets an answer below 500, errors in the SPEC's shape.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.limits import INGEST_ENDPOINT
from tests.hostile import error_shape
from tests.hostile.conftest import count_case
from tests.hostile.endpoints import Endpoint, routes, throwaway_app
from tests.platform_events import signed_bytes_headers

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

    from tests.analytics_fixture import History
    from tests.conftest import Account

ROUTES = [r for r in routes(throwaway_app()) if r.endpoint != "static"]
WRITES = [r for r in ROUTES if r.writes]
PROPERTIES = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_BODY = 64 * 1024
# Deep bodies stay under the size limit: depth, not size, is what they test.
HOSTILE_BODIES = {
    "oversized": (b'{"pad": "' + b"x" * MAX_BODY + b'"}', 413),
    "deep-arrays": (b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", 400),
    "deep-objects": (b'{"a": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}", 400),
    "deep-unclosed": (b'{"a": ' + b"[" * 60_000, 400),
    "latin-1": (
        '{"meetingName": "caf\u00e9", "startWithPersonalUrl": false}'.encode("latin-1"),
        400,
    ),
    "lone-surrogate": (b'{"meetingName": "\xed\xa0\x80", "startWithPersonalUrl": false}', 400),
    "overlong-utf8": (b'{"meetingName": "\xc0\xaf", "startWithPersonalUrl": false}', 400),
    "utf-16": ('{"startWithPersonalUrl": false}'.encode("utf-16"), 400),
}


@pytest.fixture
def ids(client: FlaskClient, history: History, alice: Account) -> dict[str, Any]:
    started = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=alice.headers
    ).get_json()
    rule = client.post(
        "/v1/alerts/rules",
        json={"type": "delivery.failed", "params": {}, "callbackUrl": "https://93.184.216.34/r"},
        headers=alice.headers,
    ).get_json()
    return {
        "meeting_id": history.meetings["never"],
        "delivery_id": history.deliveries[0],
        "rule_id": rule["id"],
        "token": started["presenterLink"].rsplit("/", 1)[-1],
        "slug": "alice",
        "filename": "x",
    }


def send(
    client: FlaskClient,
    app: Flask,
    route: Endpoint,
    ids: dict[str, Any],
    alice: Account,
    raw: bytes,
    **kwargs: Any,
) -> Any:
    headers = {**alice.headers, "Content-Type": "application/json", "Accept": "application/json"}
    if route.endpoint == INGEST_ENDPOINT:
        headers.update(signed_bytes_headers(raw))
    headers.update(kwargs.pop("headers", {}))
    return client.open(
        route.url(app, ids), method=route.method, data=raw, headers=headers, **kwargs
    )


def assert_in_shape(route: Endpoint, response: Any) -> None:
    assert response.status_code < 500, (str(route), response.get_data(as_text=True)[:300])
    if response.status_code >= 400 and not error_shape.presenter_page(
        route.rule, response.status_code, response.content_type
    ):
        found = error_shape.problems(
            response.status_code, response.content_type, response.get_data()
        )
        assert not found, (str(route), found)


@pytest.mark.parametrize("route", WRITES, ids=str)
def test_hostile_bodies_are_refused_by_every_route_that_reads_one(
    client: FlaskClient, app: Flask, ids: dict[str, Any], alice: Account, route: Endpoint
) -> None:
    # A JSON array where an object belongs is refused only by a route that reads its body.
    reads_body = send(client, app, route, ids, alice, b"[]").status_code in {400, 415}
    for kind, (raw, expected) in HOSTILE_BODIES.items():
        response = send(client, app, route, ids, alice, raw)
        assert_in_shape(route, response)
        if reads_body:
            assert response.status_code == expected, (kind, response.get_json())


header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF) | st.sampled_from("\t"),
    max_size=80,
)
HEADER_NAMES = [
    "Authorization",
    "Content-Type",
    "Accept",
    "Accept-Charset",
    "Content-Encoding",
    "Transfer-Encoding",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "X-Forwarded-For",
    "Idempotency-Key",
    "Cookie",
    "Range",
]


@PROPERTIES
@given(
    headers=st.dictionaries(
        st.sampled_from(HEADER_NAMES),
        header_values
        | st.sampled_from(
            [
                "Bearer",
                "Bearer ",
                "bearer \t",
                "Bearer mhat_",
                "Bearer " + "a" * 5000,
                "application/json; charset=utf-16",
                "multipart/form-data; boundary=",
                "application/x-www-form-urlencoded",
                "gzip",
                "chunked",
                "v1,",
                "v1,!!!",
                "-1",
                "1e309",
                "NaN",
                "99999999999999999999",
            ]
        ),
        min_size=1,
        max_size=5,
    ),
    keep_token=st.booleans(),
)
def test_any_header_values_get_an_answer_in_shape(
    client: FlaskClient,
    app: Flask,
    ids: dict[str, Any],
    alice: Account,
    headers: dict[str, str],
    keep_token: bool,
    request: pytest.FixtureRequest,
) -> None:
    raw = b'{"startWithPersonalUrl": false, "meetingName": "n"}'
    for route in ROUTES:
        count_case(request)
        sent = dict(headers)
        if keep_token:
            sent.setdefault("Authorization", alice.headers["Authorization"])
        if sent.get("Transfer-Encoding", "").lower() == "chunked":
            sent.pop("Transfer-Encoding")  # the test client cannot frame it; covered in ingest
        response = client.open(
            route.url(app, ids),
            method=route.method,
            data=raw if route.writes else None,
            headers=sent,
        )
        assert_in_shape(route, response)


query_strings = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "endDate",
                "status",
                "cursor",
                "meetingId",
                "from",
                "to",
                "interval",
                "limit",
                "conferenceId",
            ]
        )
        | st.text(max_size=5),
        st.binary(max_size=30),
    ),
    max_size=4,
).map(
    lambda pairs: "&".join(
        urllib.parse.quote_from_bytes(k.encode()) + "=" + urllib.parse.quote_from_bytes(v)
        for k, v in pairs
    )
)
raw_query_strings = query_strings | st.binary(max_size=40).map(
    lambda b: urllib.parse.quote_from_bytes(b, safe="=&;%+")
)


@PROPERTIES
@given(query=raw_query_strings)
def test_any_query_string_gets_an_answer_in_shape(
    client: FlaskClient,
    app: Flask,
    ids: dict[str, Any],
    alice: Account,
    query: str,
    request: pytest.FixtureRequest,
) -> None:
    for route in ROUTES:
        if route.method != "GET":
            continue
        count_case(request)
        response = client.get(
            route.url(app, ids),
            query_string=query,
            headers={**alice.headers, "Accept": "application/json"},
        )
        assert_in_shape(route, response)
