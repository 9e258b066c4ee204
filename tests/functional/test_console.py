"""The web console through Flask's test client: session, CSRF, CSP, tenants, every page."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from core import task_names
from core.config import Settings
from core.models import AlertRule, Delivery
from core.services import accounts
from receiver import create_app
from receiver.console.guard import CONTENT_SECURITY_POLICY

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker
    from werkzeug.test import TestResponse

    from tests.analytics_fixture import History
    from tests.conftest import Account, Enqueued

SECRET_KEY = "console-test-key-0123456789-abcdefghijklmnop"
CSRF_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')
PAGES = ("/console/meetings", "/console/deliveries", "/console/alerts", "/console/analytics")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return Settings.model_validate({**settings.model_dump(), "secret_key": SECRET_KEY})


def csrf_of(page: TestResponse) -> str:
    found = CSRF_RE.search(page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)
    return found.group(1)


def sign_in(client: FlaskClient, account: Account) -> TestResponse:
    form = client.get("/console/sign-in")
    response = client.post(
        "/console/sign-in", data={"token": account.token, "csrf_token": csrf_of(form)}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


def post_form(client: FlaskClient, page_url: str, action: str, **data: str) -> TestResponse:
    token = csrf_of(client.get(page_url))
    return client.post(action, data={"csrf_token": token, **data})


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


# --- the session ----------------------------------------------------------------------------


def test_sign_in_sets_a_signed_httponly_lax_secure_cookie_holding_the_token_id(
    app: Flask, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    response = sign_in(client, account)
    assert response.headers["Location"] == "/console/meetings"
    (cookie,) = response.headers.getlist("Set-Cookie")
    name, _, rest = cookie.partition("=")
    value = rest.split(";")[0]
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")[1:]}
    assert name == "meetinghooks_console"
    assert {"httponly", "secure", "samesite", "path"} <= flags.keys()
    assert "SameSite=Lax" in flags["samesite"]
    assert flags["path"].strip() == "Path=/console"
    assert account.token not in value
    stored = app.session_interface.get_signing_serializer(app).loads(value)  # type: ignore[attr-defined]
    with session_factory() as session:
        _, record = accounts.authenticate(session, account.token) or (None, None)
    assert record is not None
    assert stored["token_id"] == record.id
    assert account.token not in repr(stored)
    assert client.get("/console/meetings").status_code == 200


def test_the_cookie_is_not_secure_when_the_public_base_url_is_plain_http(
    settings: Settings,
    session_factory: sessionmaker[Session],
    enqueued: Enqueued,
    account: Account,
) -> None:
    plain = settings.model_copy(update={"public_base_url": "http://127.0.0.1:8000"})
    client = create_app(plain, session_factory=session_factory, enqueue=enqueued).test_client()
    cookie = sign_in(client, account).headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "Secure" not in cookie


def test_a_forged_cookie_is_ignored(client: FlaskClient, account: Account) -> None:
    client.set_cookie("meetinghooks_console", '{"token_id": 1}', path="/console")
    response = client.get("/console/meetings")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/console/sign-in")


def test_a_signed_out_visitor_is_sent_to_sign_in_and_back_afterwards(
    client: FlaskClient, account: Account
) -> None:
    response = client.get("/console/deliveries?status=failed")
    assert response.status_code == 302
    assert (
        response.headers["Location"] == "/console/sign-in?next=/console/deliveries?status%3Dfailed"
    )
    form = client.get(response.headers["Location"])
    back = client.post(
        "/console/sign-in",
        data={
            "token": account.token,
            "csrf_token": csrf_of(form),
            "next": "/console/deliveries?status=failed",
        },
    )
    assert back.headers["Location"] == "/console/deliveries?status=failed"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/console", "/v1/user"])
def test_sign_in_never_redirects_off_the_console(
    client: FlaskClient, account: Account, target: str
) -> None:
    form = client.get("/console/sign-in")
    response = client.post(
        "/console/sign-in",
        data={"token": account.token, "csrf_token": csrf_of(form), "next": target},
    )
    assert response.headers["Location"] == "/console/meetings"


def test_an_unknown_token_is_refused_with_the_form_again(client: FlaskClient) -> None:
    form = client.get("/console/sign-in")
    response = client.post(
        "/console/sign-in", data={"token": "mh_not-a-token", "csrf_token": csrf_of(form)}
    )
    assert response.status_code == 401
    assert "unknown or revoked" in text(response)
    assert client.get("/console/meetings").status_code == 302


def test_revoking_the_token_ends_the_session(
    client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    sign_in(client, account)
    assert client.get("/console/meetings").status_code == 200
    with session_factory.begin() as session:
        accounts.revoke_token(session, account.token)
    response = client.get("/console/meetings")
    assert response.status_code == 302
    value = response.headers["Set-Cookie"].split(";")[0].partition("=")[2]
    left = client.application.session_interface.get_signing_serializer(  # type: ignore[attr-defined]
        client.application
    ).loads(value)
    assert "token_id" not in left
    page = client.get(response.headers["Location"])
    assert "its access token was revoked" in text(page)
    assert client.get("/console/meetings").status_code == 302


def test_sign_out_ends_the_session(client: FlaskClient, account: Account) -> None:
    sign_in(client, account)
    response = post_form(client, "/console/meetings", "/console/sign-out")
    assert response.status_code == 302
    assert client.get("/console/meetings").status_code == 302
    assert "You are signed out." in text(client.get("/console/sign-in"))


def test_a_token_without_the_pages_scope_gets_a_403_page(
    client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as session:
        issued = accounts.create_token(session, user=account.user, scopes=("user_info",))
    form = client.get("/console/sign-in")
    client.post("/console/sign-in", data={"token": issued.token, "csrf_token": csrf_of(form)})
    assert client.get("/console/analytics").status_code == 200
    refused = client.get("/console/deliveries")
    assert refused.status_code == 403
    assert "lacks the start_meeting scope" in text(refused)


def test_the_console_is_off_without_a_secret_key(
    settings: Settings, session_factory: sessionmaker[Session], enqueued: Enqueued
) -> None:
    keyless = settings.model_copy(update={"secret_key": None})
    client = create_app(keyless, session_factory=session_factory, enqueue=enqueued).test_client()
    response = client.get("/console/sign-in")
    assert response.status_code == 503
    assert "set SECRET_KEY" in text(response)
    assert client.get("/healthz").status_code == 200


# --- CSRF and CSP ---------------------------------------------------------------------------


def test_a_form_posted_without_its_csrf_token_is_refused(
    client: FlaskClient, alice: Account, history: History, db_session: Session
) -> None:
    sign_in(client, alice)
    delivery_id = history.deliveries[1]
    response = client.post(f"/console/deliveries/{delivery_id}/redeliver", data={})
    assert response.status_code == 400
    assert "CSRF token" in text(response)
    wrong = client.post(
        f"/console/deliveries/{delivery_id}/redeliver", data={"csrf_token": "forged"}
    )
    assert wrong.status_code == 400
    assert db_session.get(Delivery, delivery_id).status == "failed"  # type: ignore[union-attr]


def test_the_sign_in_form_needs_its_csrf_token_too(client: FlaskClient, account: Account) -> None:
    response = client.post("/console/sign-in", data={"token": account.token})
    assert response.status_code == 400
    assert client.get("/console/meetings").status_code == 302


def test_every_page_sends_the_csp_and_carries_no_inline_script_or_style(
    client: FlaskClient, alice: Account, history: History
) -> None:
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "script-src" not in CONTENT_SECURITY_POLICY  # default-src 'none' forbids all script
    sign_in(client, alice)
    urls = [*PAGES, f"/console/meetings/{history.meetings['m1']}", "/console/meetings/999999"]
    for url in urls:
        response = client.get(url)
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        body = text(response)
        assert "<script" not in body, url
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=", body), url
    assert client.get("/console/sign-in").headers["Content-Security-Policy"]


# --- meetings and timelines ------------------------------------------------------------------


def meeting_ids(response: TestResponse) -> list[int]:
    return [int(found) for found in re.findall(r'data-meeting="(\d+)"', text(response))]


def test_the_meetings_list_shows_only_the_persons_live_meetings(
    client: FlaskClient, alice: Account, history: History
) -> None:
    sign_in(client, alice)
    shown = meeting_ids(client.get("/console/meetings"))
    m = history.meetings
    mine = {m[name] for name in m if not name.startswith("bob") and name != "deleted"}
    assert set(shown) == mine
    assert shown == sorted(shown, reverse=True)


def test_the_meetings_list_filters_by_status_and_start_time(
    client: FlaskClient, alice: Account, history: History
) -> None:
    sign_in(client, alice)
    m = history.meetings
    running = meeting_ids(client.get("/console/meetings?status=started"))
    assert set(running) == {m["m3"], m["m8"]}
    # Started on 2026-11-02 from 10:00 to before 11:00 (UTC), any status.
    window = client.get("/console/meetings?from=2026-11-02T10:00&to=2026-11-02T11:00")
    assert set(meeting_ids(window)) == {m["m1"], m["m2"], m["m3"]}
    both = client.get("/console/meetings?status=ended&from=2026-11-02T10:00&to=2026-11-02T11:00")
    assert set(meeting_ids(both)) == {m["m1"], m["m2"]}


def test_a_bad_filter_is_named_on_the_page(client: FlaskClient, alice: Account) -> None:
    sign_in(client, alice)
    response = client.get("/console/meetings?status=lost&from=yesterday")
    assert response.status_code == 400
    assert "status: must be one of" in text(response)
    assert "from: not a date and time" in text(response)


@pytest.mark.parametrize("meeting", ["bob1", "deleted"])
def test_another_users_or_a_deleted_meeting_is_a_404_page(
    client: FlaskClient, alice: Account, history: History, meeting: str
) -> None:
    sign_in(client, alice)
    response = client.get(f"/console/meetings/{history.meetings[meeting]}")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "not found" in text(response)


def test_a_timeline_lists_events_in_event_time_order_with_deliveries_and_attempts(
    client: FlaskClient, alice: Account, history: History
) -> None:
    sign_in(client, alice)
    body = text(client.get(f"/console/meetings/{history.meetings['m2']}"))
    events = re.findall(
        r'class="event-type">([a-z.]+)</span> <span class="muted">at</span> ([0-9: -]+)</h3>', body
    )
    assert events == [
        ("meeting.end", "2026-11-02 10:20:00"),
        ("meeting.start", "2026-11-02 10:30:00"),
        ("meeting.end", "2026-11-02 10:45:00"),
        ("meeting.end", "2026-11-02 10:50:00"),
    ]
    assert "source <strong>platform</strong>" in body
    d4, d5, d6, d7 = history.deliveries[3:]
    shown = [
        int(found)
        for found in re.findall(r'<section class="delivery[^"]*" data-delivery="(\d+)"', body)
    ]
    assert shown == [d5, d7, d4, d6]
    # d5's seven failed attempts, with their latencies, each with a Redeliver button.
    assert "1000 ms" in body
    assert "1600 ms" in body
    assert body.count('class="redeliver"') == 4


# --- deliveries ----------------------------------------------------------------------------


def delivery_rows(response: TestResponse) -> list[tuple[str, int]]:
    return [
        (status, int(found))
        for status, found in re.findall(
            r'<tr class="row-(\w+)" data-delivery="(\d+)"', text(response)
        )
    ]


def test_the_deliveries_list_filters_by_status_and_marks_failed_ones(
    client: FlaskClient, alice: Account, history: History
) -> None:
    sign_in(client, alice)
    everything = delivery_rows(client.get("/console/deliveries"))
    assert [d for _, d in everything] == sorted(history.deliveries, reverse=True)
    failed = delivery_rows(client.get("/console/deliveries?status=failed"))
    assert failed == [("failed", history.deliveries[5]), ("failed", history.deliveries[1])]
    assert {status for status, _ in everything} == {"succeeded", "failed", "pending"}


def test_a_bad_cursor_is_a_400_page(client: FlaskClient, alice: Account) -> None:
    sign_in(client, alice)
    response = client.get("/console/deliveries?cursor=nonsense")
    assert response.status_code == 400
    assert "cursor" in text(response)


def test_redeliver_sends_the_delivery_again_as_the_api_does(
    client: FlaskClient, alice: Account, history: History, enqueued: Enqueued, db_session: Session
) -> None:
    sign_in(client, alice)
    delivery_id = history.deliveries[1]  # failed for good
    meeting_page = f"/console/meetings/{history.meetings['m1']}"
    response = post_form(
        client, meeting_page, f"/console/deliveries/{delivery_id}/redeliver", next=meeting_page
    )
    assert response.status_code == 302
    assert response.headers["Location"] == meeting_page
    delivery = db_session.get(Delivery, delivery_id)
    assert delivery is not None
    assert (delivery.status, delivery.attempt_count) == ("pending", 0)
    assert enqueued.calls == [(task_names.DELIVER, {"delivery_id": delivery_id})]
    assert "is being sent again" in text(client.get(meeting_page))


def test_another_users_delivery_cannot_be_redelivered(
    client: FlaskClient, alice: Account, bob: Account, history: History, enqueued: Enqueued
) -> None:
    sign_in(client, bob)
    response = post_form(
        client, "/console/deliveries", f"/console/deliveries/{history.deliveries[1]}/redeliver"
    )
    assert response.status_code == 404
    assert enqueued.calls == []


# --- alerts --------------------------------------------------------------------------------


def test_alert_rules_are_created_and_deleted(
    client: FlaskClient, account: Account, db_session: Session
) -> None:
    sign_in(client, account)
    response = post_form(
        client,
        "/console/alerts",
        "/console/alerts/rules",
        type="meeting.short",
        seconds="300",
        minutes="7",  # another type's field: ignored
        callback_url="https://hooks.example.test/alerts",
    )
    assert response.status_code == 302
    rule = db_session.scalars(sa.select(AlertRule)).one()
    assert (rule.type, rule.params, rule.callback_url) == (
        "meeting.short",
        {"seconds": 300},
        "https://hooks.example.test/alerts",
    )
    page = client.get("/console/alerts")
    assert f'data-rule="{rule.id}"' in text(page)
    deleted = post_form(client, "/console/alerts", f"/console/alerts/rules/{rule.id}/delete")
    assert deleted.status_code == 302
    db_session.rollback()  # a new snapshot: see the console's commit
    assert rule.deleted_at is not None
    assert f'data-rule="{rule.id}"' not in text(client.get("/console/alerts"))


def test_a_bad_alert_rule_is_refused_with_the_apis_reasons(
    client: FlaskClient, account: Account, db_session: Session
) -> None:
    sign_in(client, account)
    response = post_form(
        client,
        "/console/alerts",
        "/console/alerts/rules",
        type="delivery.failing",
        attempts="8",
        callback_url="http://10.0.0.1/alerts",
    )
    assert response.status_code == 400
    body = text(response)
    assert "params.attempts: must be below 8" in body
    assert "callbackUrl:" in body
    assert db_session.scalars(sa.select(AlertRule)).all() == []


def test_another_users_rule_cannot_be_deleted(
    client: FlaskClient, alice: Account, bob: Account, db_session: Session
) -> None:
    sign_in(client, alice)
    post_form(
        client,
        "/console/alerts",
        "/console/alerts/rules",
        type="delivery.failed",
        callback_url="https://hooks.example.test/alerts",
    )
    rule = db_session.scalars(sa.select(AlertRule)).one()
    other = FlaskClient(client.application)
    sign_in(other, bob)
    response = post_form(other, "/console/alerts", f"/console/alerts/rules/{rule.id}/delete")
    assert response.status_code == 404
    db_session.rollback()
    assert rule.deleted_at is None
    assert f'data-rule="{rule.id}"' not in text(other.get("/console/alerts"))


# --- analytics -------------------------------------------------------------------------------


def test_analytics_charts_and_figures_match_the_api(
    client: FlaskClient, alice: Account, history: History
) -> None:
    sign_in(client, alice)
    page = text(
        client.get("/console/analytics?from=2026-11-02T00:00&to=2026-11-03T00:00&interval=hour")
    )
    api = client.get(
        "/v1/analytics/timeseries?interval=hour&from=2026-11-02T00:00:00Z&to=2026-11-03T00:00:00Z",
        headers=alice.headers,
    ).get_json()
    for series, key in (("started", "started"), ("ended", "ended"), ("peak", "peakConcurrent")):
        bars = re.findall(
            rf'data-series="{series}" data-start="([^"]+)" data-value="([^"]*)"', page
        )
        assert [(start, int(value)) for start, value in bars] == [
            (b["start"], b[key]) for b in api["buckets"]
        ], series
    summary = client.get(
        "/v1/analytics/summary?from=2026-11-02T00:00:00Z&to=2026-11-03T00:00:00Z",
        headers=alice.headers,
    ).get_json()
    assert f'data-figure="started">{summary["meetings"]["started"]}<' in page
    assert f'data-figure="ended">{summary["meetings"]["ended"]}<' in page


def test_analytics_chart_of_callbacks_per_bucket(
    client: FlaskClient, alice: Account, history: History
) -> None:
    sign_in(client, alice)
    now = dt.datetime.now(dt.UTC)
    # Every callback was made just now: one hourly bucket of this range holds them all.
    hour = dt.timedelta(hours=1)
    span = f"from={now - hour:%Y-%m-%dT%H:%M}&to={now + hour:%Y-%m-%dT%H:%M}"
    page = text(client.get(f"/console/analytics?{span}&interval=hour"))
    rates = [
        v
        for v in re.findall(r'data-series="success" data-start="[^"]+" data-value="([^"]*)"', page)
        if v
    ]
    latencies = [
        v
        for v in re.findall(r'data-series="latency" data-start="[^"]+" data-value="([^"]*)"', page)
        if v
    ]
    # 3 succeeded, 2 failed (and 2 pending): OUTCOMES in tests/analytics_fixture.py.
    assert rates == ["60.0"]
    # Attempts with a latency: 120, 200..260 and 2000, 40, 310, 75, 60, 1000..1600.
    known = [120, 200, 210, 220, 230, 240, 250, 260, 2000, 40, 310, 75, 60, *range(1000, 1601, 100)]
    assert latencies == [str(round(sum(known) / len(known), 1))]


def test_a_bad_range_is_named_on_the_analytics_page(client: FlaskClient, alice: Account) -> None:
    sign_in(client, alice)
    response = client.get("/console/analytics?from=2026-11-03T00:00&to=2026-11-02T00:00")
    assert response.status_code == 400
    assert "to: must be after from" in text(response)
