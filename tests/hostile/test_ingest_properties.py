"""Signed platform events with generated bodies: what a schema cannot say about POST /v1/events.

Each body is signed over its exact bytes, so the signature check passes and the body itself is
what is tested: any JSON value, near-valid events with every field's type varied, unicode,
nesting and sizes up to past the limit, and bytes that are not UTF-8 at all. Every answer is
202/200 with the event stored once, or a 4xx in the SPEC's shape; never a 5xx.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import Event
from tests.hostile import error_shape
from tests.hostile.conftest import count_case
from tests.platform_events import signed_bytes_headers

if TYPE_CHECKING:
    from flask.testing import FlaskClient
    from sqlalchemy.orm import Session

    from tests.analytics_fixture import History

PROPERTIES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ACCEPTED = {200, 202}
REFUSED = {400, 413, 415}
MAX_BODY = 64 * 1024

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.just(dt.UTC)).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat()),  # naive: refused
    st.sampled_from(
        [
            "",
            "now",
            "2026-13-40T99:99:99Z",
            "9999-12-31T23:59:59+14:00",
            "0001-01-01T00:00:00-14:00",
        ]
    ),
    json_values,
)
meeting_ids = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([1, 2, 3, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 0, -1]),
    st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
conference_ids = st.one_of(
    st.from_regex(r"\A[0-9]{9}\Z"), st.integers(min_value=-10, max_value=10**10), json_values
)


@st.composite
def near_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event with each field right (three times in four) or wrong, plus unknown fields."""

    def either(right: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any]) -> Any:
        return draw(wrong if draw(st.integers(0, 3)) == 0 else right)

    data: dict[str, Any] = {}
    # The seeded history's meetings have the first ids; larger ones are unknown meetings.
    data["meetingId"] = either(st.integers(1, 20), meeting_ids)
    if draw(st.booleans()):
        data["conferenceId"] = either(st.from_regex(r"\A[0-9]{9}\Z"), conference_ids)
    event: dict[str, Any] = {
        "type": either(st.sampled_from(["meeting.start", "meeting.end"]), json_values),
        "timestamp": either(
            st.datetimes(timezones=st.just(dt.UTC)).map(lambda t: t.isoformat()), timestamps
        ),
        "data": either(st.just(data), json_values),
    }
    if draw(st.integers(0, 5)) == 0:
        event.pop(draw(st.sampled_from(["type", "timestamp", "data"])))
    event.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    return event


def post_signed(
    client: FlaskClient, raw: bytes, content_type: str | None = "application/json"
) -> Any:
    headers = signed_bytes_headers(raw)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post("/v1/events", data=raw, headers=headers), headers["webhook-id"]


def stored(db_session: Session, webhook_id: str) -> int:
    db_session.rollback()  # a fresh snapshot: the receiver committed in its own session
    return (
        db_session.scalar(
            sa.select(sa.func.count()).select_from(Event).where(Event.source_event_id == webhook_id)
        )
        or 0
    )


def assert_answer(response: Any, db_session: Session, webhook_id: str) -> None:
    status = response.status_code
    assert status in ACCEPTED | REFUSED, (status, response.get_data(as_text=True)[:300])
    if status in ACCEPTED:
        assert stored(db_session, webhook_id) == 1
    else:
        found = error_shape.problems(status, response.content_type, response.get_data())
        assert not found, found
        assert stored(db_session, webhook_id) == 0


@pytest.fixture
def seeded(history: History) -> History:
    return history


class TestSignedIngestBodies:
    @PROPERTIES
    @given(event=near_valid_events())
    def test_near_valid_events_are_recorded_once_or_refused_in_shape(
        self,
        client: FlaskClient,
        db_session: Session,
        seeded: History,
        event: dict[str, Any],
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        response, webhook_id = post_signed(client, json.dumps(event).encode())
        assert_answer(response, db_session, webhook_id)

    @PROPERTIES
    @given(value=json_values, ensure_ascii=st.booleans())
    def test_any_json_value_is_refused_or_recorded_never_a_5xx(
        self,
        client: FlaskClient,
        db_session: Session,
        value: Any,
        ensure_ascii: bool,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        raw = json.dumps(value, ensure_ascii=ensure_ascii).encode()
        response, webhook_id = post_signed(client, raw)
        assert_answer(response, db_session, webhook_id)

    @PROPERTIES
    @given(raw=st.binary(max_size=300))
    def test_any_bytes_are_refused_in_shape(
        self, client: FlaskClient, db_session: Session, raw: bytes, request: pytest.FixtureRequest
    ) -> None:
        count_case(request)
        response, webhook_id = post_signed(client, raw)
        assert_answer(response, db_session, webhook_id)

    @settings(PROPERTIES, max_examples=40)
    @given(
        depth=st.integers(min_value=1, max_value=20_000),
        opener=st.sampled_from(["[", '{"a":']),
        closed=st.booleans(),
    )
    def test_any_depth_is_refused_or_read_never_a_recursion_error(
        self,
        client: FlaskClient,
        db_session: Session,
        depth: int,
        opener: str,
        closed: bool,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        closer = "]" if opener == "[" else "}"
        inner = opener * depth + "1" + (closer * depth if closed else "")
        raw = ('{"type": "meeting.start", "data": ' + inner + "}").encode()
        response, webhook_id = post_signed(client, raw)
        assert response.status_code in {400, 413}, response.get_data(as_text=True)[:300]
        assert_answer(response, db_session, webhook_id)

    @settings(PROPERTIES, max_examples=30)
    @given(
        size=st.integers(min_value=MAX_BODY - 64, max_value=MAX_BODY + 64), chunked=st.booleans()
    )
    def test_sizes_around_the_limit_are_read_or_413(
        self,
        client: FlaskClient,
        db_session: Session,
        seeded: History,
        size: int,
        chunked: bool,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        meeting_id = next(iter(seeded.meetings.values()))
        head = json.dumps(
            {
                "type": "meeting.end",
                "timestamp": "2026-11-02T10:00:00Z",
                "data": {"meetingId": meeting_id},
                "pad": "",
            }
        ).encode()[:-2]
        raw = head + b"x" * max(0, size - len(head) - 2) + b'"}'
        headers = {**signed_bytes_headers(raw), "Content-Type": "application/json"}
        if chunked:
            # No Content-Length; the server ends the stream, as gunicorn does for chunked bodies.
            response = client.post(
                "/v1/events",
                input_stream=io.BytesIO(raw),
                headers={**headers, "Transfer-Encoding": "chunked"},
                environ_overrides={"wsgi.input_terminated": True},
            )
        else:
            response = client.post("/v1/events", data=raw, headers=headers)
        expected = 202 if len(raw) < MAX_BODY or (len(raw) == MAX_BODY and not chunked) else 413
        assert response.status_code == expected, (len(raw), response.get_data(as_text=True)[:200])
        assert_answer(response, db_session, headers["webhook-id"])

    @settings(PROPERTIES, max_examples=60)
    @given(
        text=st.text(max_size=60),
        encoding=st.sampled_from(
            ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1"]
        ),
        content_type=st.sampled_from(
            [
                None,
                "application/json",
                "application/json; charset=utf-8",
                "application/json; charset=latin-1",
                "application/cloudevents+json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/json; charset=\x7f",
                "",
            ]
        ),
    )
    def test_encodings_and_content_types_are_read_or_refused_in_shape(
        self,
        client: FlaskClient,
        db_session: Session,
        seeded: History,
        text: str,
        encoding: str,
        content_type: str | None,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        meeting_id = next(iter(seeded.meetings.values()))
        body = json.dumps(
            {
                "type": "meeting.start",
                "timestamp": "2026-11-02T10:00:00Z",
                "data": {"meetingId": meeting_id},
                "note": text,
            },
            ensure_ascii=False,
        )
        try:
            raw = body.encode(encoding)
        except UnicodeEncodeError:
            raw = body.encode("utf-8")
        response, webhook_id = post_signed(client, raw, content_type)
        assert_answer(response, db_session, webhook_id)
        if encoding not in {"utf-8", "latin-1"} and response.status_code in ACCEPTED:
            # Only UTF-8 is JSON (RFC 8259); latin-1 equals UTF-8 for ASCII text only.
            raise AssertionError(f"a {encoding} body was accepted")
