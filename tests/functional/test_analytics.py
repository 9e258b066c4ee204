from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from core.db import metadata, utcnow
from core.models import AlertType, Meeting
from core.services import accounts, alerts
from core.validation import isoformat
from tests.analytics_fixture import History
from tests.conftest import Account

SUMMARY, TIMESERIES = "/v1/analytics/summary", "/v1/analytics/timeseries"
DAY_FROM, DAY_TO = "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"


def get(client: FlaskClient, account: Account, path: str, **params: str) -> dict[str, Any]:
    response = client.get(path, query_string=params, headers=account.headers)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def hours(**values: int) -> list[int]:
    """24 hourly values: `h10=4` sets hour 10; `rest` is every other hour."""
    rest = values.pop("rest", 0)
    return [values.get(f"h{h}", rest) for h in range(24)]


class TestTheFoldIsWhatAnalyticsReads:
    def test_meeting_columns_come_from_the_events(
        self, history: History, db_session: Session
    ) -> None:
        rows = {
            m.id: (m.status, m.started_at, m.ended_at, m.duration_seconds)
            for m in db_session.scalars(sa.select(Meeting))
        }
        m = history.meetings
        day = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
        h = dt.timedelta(hours=1)
        assert rows[m["m1"]] == ("ended", day + 10 * h, day + 11 * h, 3600)
        assert rows[m["m2"]] == ("ended", day + 10.5 * h, day + 10.75 * h, 900)
        assert rows[m["m4"]] == ("ended", None, day + 12 * h, None)
        assert rows[m["m7"]] == ("ended", day + 12.5 * h, day + 14 * h, 5400)
        assert rows[m["m10"]][3] == 0
        assert rows[m["m3"]][0] == rows[m["m8"]][0] == "started"


class TestSummary:
    def test_one_day_counted_by_hand(
        self, client: FlaskClient, alice: Account, history: History
    ) -> None:
        body = get(client, alice, SUMMARY, **{"from": DAY_FROM, "to": DAY_TO})
        assert body == {
            "from": DAY_FROM,
            "to": DAY_TO,
            # Started m1 m2 m3 m6 m7 m9 m10; ended m1 m2 m4 m5 m7 m9 m10; running m3 m8.
            "meetings": {"started": 7, "ended": 7, "active": 2},
            # 0 0 900 3600 5400 7200 (m4 has no start): nearest ranks 3 and 6 of 6.
            "durationSeconds": {"avg": 2850.0, "p50": 900, "p95": 7200, "max": 7200},
            # The callbacks were made now, outside this range: nothing is known.
            "deliveries": {
                "succeeded": 0,
                "failed": 0,
                "pending": 0,
                "successRate": None,
                "p95LatencyMs": None,
            },
        }

    def test_a_longer_range_takes_the_end_of_the_next_day(
        self, client: FlaskClient, alice: Account, history: History
    ) -> None:
        body = get(client, alice, SUMMARY, **{"from": DAY_FROM, "to": "2026-11-04T00:00:00Z"})
        assert body["meetings"] == {"started": 7, "ended": 8, "active": 2}
        # m6's 3600 s joins: 0 0 900 3600 3600 5400 7200 (20700 / 7), ranks 4 and 7 of 7.
        assert body["durationSeconds"] == {"avg": 2957.1, "p50": 3600, "p95": 7200, "max": 7200}

    def test_callbacks_made_now_counted_by_hand(
        self, client: FlaskClient, alice: Account, history: History
    ) -> None:
        now = utcnow()
        body = get(
            client,
            alice,
            SUMMARY,
            **{
                "from": isoformat(now - dt.timedelta(hours=1)) or "",
                "to": isoformat(now + dt.timedelta(hours=1)) or "",
            },
        )
        assert body["meetings"] == {"started": 0, "ended": 0, "active": 2}
        assert body["durationSeconds"] == {"avg": None, "p50": None, "p95": None, "max": None}
        # 20 latencies (the attempt in progress has none); rank 19 is 1600, the max 2000.
        assert body["deliveries"] == {
            "succeeded": 3,
            "failed": 2,
            "pending": 2,
            "successRate": 0.6,
            "p95LatencyMs": 1600,
        }

    def test_alert_deliveries_are_not_callbacks(
        self,
        client: FlaskClient,
        alice: Account,
        history: History,
        session_factory: sessionmaker[Session],
    ) -> None:
        now = utcnow()
        span = {
            "from": isoformat(now - dt.timedelta(hours=1)) or "",
            "to": isoformat(now + dt.timedelta(hours=1)) or "",
        }
        before = get(client, alice, SUMMARY, **span)["deliveries"]
        with session_factory.begin() as session:
            rule = alerts.create_rule(
                session,
                alice.id,
                type=AlertType.DELIVERY_FAILED,
                params={},
                callback_url="https://alerts.example.test/hook",
            )
            fired = alerts.fire(
                session, rule, subject_key="delivery:test", text="t", data={}, now=utcnow()
            )
            assert fired is not None
        # The alert's own delivery (pending, made now) is in the outbox but is no callback.
        assert get(client, alice, SUMMARY, **span)["deliveries"] == before

    def test_default_range_is_the_last_30_days_up_to_now(
        self, client: FlaskClient, alice: Account, history: History
    ) -> None:
        before = utcnow().replace(microsecond=0)
        body = get(client, alice, SUMMARY)
        after = utcnow()
        to = dt.datetime.fromisoformat(body["to"])
        assert before <= to <= after
        assert dt.datetime.fromisoformat(body["from"]) == to - dt.timedelta(days=30)

    def test_an_empty_parameter_is_the_default(
        self, client: FlaskClient, alice: Account, history: History
    ) -> None:
        body = get(client, alice, SUMMARY, **{"from": DAY_FROM, "to": "", "interval": "week"})
        assert body["from"] == DAY_FROM
        assert body["meetings"]["started"] == 7

    def test_another_user_sees_only_their_own(
        self, client: FlaskClient, bob: Account, history: History
    ) -> None:
        body = get(client, bob, SUMMARY, **{"from": DAY_FROM, "to": DAY_TO})
        assert body["meetings"] == {"started": 2, "ended": 1, "active": 1}
        assert body["durationSeconds"] == {"avg": 3600.0, "p50": 3600, "p95": 3600, "max": 3600}

    def test_a_user_with_nothing_gets_nulls_not_zeros(
        self, client: FlaskClient, make_account: Callable[..., Account], history: History
    ) -> None:
        carol = make_account(email="carol@example.com")
        body = get(client, carol, SUMMARY)
        assert body["meetings"] == {"started": 0, "ended": 0, "active": 0}
        assert body["durationSeconds"] == {"avg": None, "p50": None, "p95": None, "max": None}
        assert body["deliveries"]["successRate"] is None
        assert body["deliveries"]["p95LatencyMs"] is None


class TestTimeseries:
    def test_hourly_counted_by_hand(
        self, client: FlaskClient, alice: Account, history: History
    ) -> None:
        body = get(
            client, alice, TIMESERIES, **{"from": DAY_FROM, "to": DAY_TO, "interval": "hour"}
        )
        assert (body["interval"], body["from"], body["to"]) == ("hour", DAY_FROM, DAY_TO)
        buckets = body["buckets"]
        assert [b["start"] for b in buckets] == [f"2026-11-02T{h:02d}:00:00Z" for h in range(24)]
        assert [b["started"] for b in buckets] == hours(h10=3, h12=1, h15=1, h16=1, h23=1)
        assert [b["ended"] for b in buckets] == hours(
            h1=1, h10=1, h11=1, h12=1, h14=1, h15=1, h16=1
        )
        # Hour 12 ended m4, which has no duration: the mean is unknown, not 0.
        assert [b["avgDurationSeconds"] for b in buckets] == [
            {1: 7200.0, 10: 900.0, 11: 3600.0, 14: 5400.0, 15: 0.0, 16: 0.0}.get(h)
            for h in range(24)
        ]
        # m8 runs all day, m5 until 01:00 sharp, m1 10:00-11:00 sharp, m2 10:30-10:45, m3 from
        # 10:40, m7 12:30-14:00 sharp, m6 from 23:30; m9 and m10 have no length.
        assert [b["peakConcurrent"] for b in buckets] == hours(
            h0=2, h10=4, h11=2, h12=3, h13=3, h14=2, h15=2, h16=2, h17=2, h18=2, h19=2, h20=2,
            h21=2, h22=2, h23=3, rest=1,
        )  # fmt: skip

    def test_daily_buckets_are_utc_days_cut_to_the_range(
        self, client: FlaskClient, alice: Account, history: History
    ) -> None:
        body = get(
            client,
            alice,
            TIMESERIES,
            **{
                "from": "2026-11-01T13:00:00+01:00",
                "to": "2026-11-04T00:00:00Z",
                "interval": "day",
            },
        )
        assert body["from"] == "2026-11-01T12:00:00Z"
        assert body["buckets"] == [
            # From 12:00 only: m8 started 20:00, m5 23:00.
            {"start": "2026-11-01T00:00:00Z", "started": 2, "ended": 0,
             "avgDurationSeconds": None, "peakConcurrent": 2},
            {"start": "2026-11-02T00:00:00Z", "started": 7, "ended": 7,
             "avgDurationSeconds": 2850.0, "peakConcurrent": 4},
            # m6 ends 00:30 while m3 and m8 still run.
            {"start": "2026-11-03T00:00:00Z", "started": 0, "ended": 1,
             "avgDurationSeconds": 3600.0, "peakConcurrent": 3},
        ]  # fmt: skip

    def test_buckets_add_up_to_the_summary(
        self, client: FlaskClient, alice: Account, history: History
    ) -> None:
        span = {"from": "2026-11-01T18:30:00Z", "to": "2026-11-03T07:15:00Z"}
        summary = get(client, alice, SUMMARY, **span)
        series = get(client, alice, TIMESERIES, **span, interval="hour")
        assert len(series["buckets"]) == 6 + 24 + 8  # 18:00-23:00, a day, 00:00-07:00
        assert sum(b["started"] for b in series["buckets"]) == summary["meetings"]["started"]
        assert sum(b["ended"] for b in series["buckets"]) == summary["meetings"]["ended"]

    def test_default_interval_is_day_and_empty_days_are_listed(
        self, client: FlaskClient, make_account: Callable[..., Account]
    ) -> None:
        carol = make_account(email="carol@example.com")
        body = get(client, carol, TIMESERIES)
        assert body["interval"] == "day"
        assert len(body["buckets"]) == 31  # 30 days that start mid-day cover 31 UTC days
        assert {(b["started"], b["ended"], b["avgDurationSeconds"], b["peakConcurrent"])
                for b in body["buckets"]} == {(0, 0, None, 0)}  # fmt: skip

    def test_another_user_sees_only_their_own(
        self, client: FlaskClient, bob: Account, history: History
    ) -> None:
        body = get(client, bob, TIMESERIES, **{"from": DAY_FROM, "to": DAY_TO, "interval": "hour"})
        # bob1 10:00-11:00 and bob2 from 10:05.
        assert [b["peakConcurrent"] for b in body["buckets"]] == [0] * 10 + [2] + [1] * 13


def _row_counts(session: Session) -> dict[str, int]:
    return {
        table.name: session.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        for table in metadata.sorted_tables
    }


class TestBadInput:
    @pytest.mark.parametrize(
        ("path", "params", "fields"),
        [
            (SUMMARY, {"from": "2026-11-02T00:00:00"}, ["from"]),
            (SUMMARY, {"to": "yesterday"}, ["to"]),
            (SUMMARY, {"from": DAY_TO, "to": DAY_FROM}, ["to"]),
            (SUMMARY, {"from": DAY_FROM, "to": DAY_FROM}, ["to"]),
            (SUMMARY, {"from": "2999-01-01T00:00:00Z"}, ["from"]),
            (SUMMARY, {"to": "0001-01-02T00:00:00Z"}, ["to"]),
            (SUMMARY, {"from": "9999-12-31T23:00:00-05:00"}, ["from"]),
            (TIMESERIES, {"interval": "week"}, ["interval"]),
            (TIMESERIES, {"interval": "HOUR"}, ["interval"]),
            (TIMESERIES, {"from": "nope", "to": "2026-11-02", "interval": "minute"},
             ["from", "to", "interval"]),
            (TIMESERIES, {"from": "2025-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z",
                          "interval": "hour"}, ["interval"]),
            (TIMESERIES, {"from": "1990-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
             ["interval"]),
        ],
    )  # fmt: skip
    def test_is_400_naming_the_field_and_changes_nothing(
        self,
        client: FlaskClient,
        alice: Account,
        history: History,
        db_session: Session,
        path: str,
        params: dict[str, str],
        fields: list[str],
    ) -> None:
        before = _row_counts(db_session)
        response = client.get(path, query_string=params, headers=alice.headers)
        assert response.status_code == 400
        body = response.get_json()
        assert body["code"] == "invalid-request"
        assert isinstance(body["Message"], str)
        assert [e["field"] for e in body["errors"]] == fields
        db_session.expire_all()
        assert _row_counts(db_session) == before

    def test_ten_thousand_buckets_are_allowed(self, client: FlaskClient, alice: Account) -> None:
        params = {"from": "2026-01-01T00:00:00Z", "to": "2027-02-21T16:00:00Z", "interval": "hour"}
        body = get(client, alice, TIMESERIES, **params)
        assert len(body["buckets"]) == 10_000
        params["to"] = "2027-02-21T16:00:01Z"
        assert client.get(TIMESERIES, query_string=params, headers=alice.headers).status_code == 400


class TestScope:
    @pytest.mark.parametrize("path", [SUMMARY, TIMESERIES])
    def test_user_info_is_enough_and_needed(
        self, client: FlaskClient, alice: Account, session_factory: sessionmaker[Session], path: str
    ) -> None:
        with session_factory.begin() as session:
            reader = accounts.create_token(session, user=alice.user, scopes=("user_info",))
            other = accounts.create_token(
                session, user=alice.user, scopes=("scheduler", "start_meeting")
            )
        assert (
            client.get(path, headers={"Authorization": f"Bearer {reader.token}"}).status_code == 200
        )
        refused = client.get(path, headers={"Authorization": f"Bearer {other.token}"})
        assert refused.status_code == 403
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        assert client.get(path).status_code == 401
