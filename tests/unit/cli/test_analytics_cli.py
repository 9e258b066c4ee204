from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from meetinghooks.cli import main
from tests.analytics_fixture import History, build
from tests.conftest import INGEST_SECRET, Account

RANGE = ["--from", "2026-11-02T00:00:00Z", "--to", "2026-11-03T00:00:00Z"]


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account(email="alice@example.com")


@pytest.fixture
def history(
    session_factory: sessionmaker[Session],
    alice: Account,
    make_account: Callable[..., Account],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> History:
    # The CLI reads the same database as the API under test.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BROKER_URL", "memory://")
    monkeypatch.setenv("INGEST_SIGNING_SECRET", INGEST_SECRET)
    return build(session_factory, alice, make_account(email="bob@example.com"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def api(client: FlaskClient, account: Account, path: str, **params: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(path, query_string=params, headers=account.headers).get_json()
    return body


def test_summary_json_is_the_api_body_exactly(
    capsys: pytest.CaptureFixture[str], client: FlaskClient, alice: Account, history: History
) -> None:
    out = run(
        capsys, "analytics", "summary", "--email", "alice@example.com", *RANGE, "--format", "json"
    )
    expected = api(client, alice, "/v1/analytics/summary", **{"from": RANGE[1], "to": RANGE[3]})
    assert json.loads(out) == expected
    assert expected["meetings"] == {"started": 7, "ended": 7, "active": 2}


def test_timeseries_json_is_the_api_body_exactly(
    capsys: pytest.CaptureFixture[str], client: FlaskClient, alice: Account, history: History
) -> None:
    out = run(capsys, "analytics", "timeseries", "--email", "alice@example.com", *RANGE,
              "--interval", "hour", "--format", "json")  # fmt: skip
    expected = api(client, alice, "/v1/analytics/timeseries",
                   **{"from": RANGE[1], "to": RANGE[3], "interval": "hour"})  # fmt: skip
    assert json.loads(out) == expected


def test_timeseries_csv_has_a_header_and_one_row_per_bucket(
    capsys: pytest.CaptureFixture[str], history: History
) -> None:
    out = run(capsys, "analytics", "timeseries", "--email", "alice@example.com", *RANGE,
              "--interval", "hour", "--format", "csv")  # fmt: skip
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["start", "started", "ended", "avgDurationSeconds", "peakConcurrent"]
    assert len(rows) == 25
    assert rows[11] == ["2026-11-02T10:00:00Z", "3", "1", "900.0", "4"]
    assert rows[13] == ["2026-11-02T12:00:00Z", "1", "1", "", "3"]  # unknown mean: empty


def test_summary_csv_and_table(capsys: pytest.CaptureFixture[str], history: History) -> None:
    out = run(
        capsys, "analytics", "summary", "--email", "alice@example.com", *RANGE, "--format", "csv"
    )
    header, row = list(csv.reader(io.StringIO(out)))
    values = dict(zip(header, row, strict=True))
    assert values["meetings.started"] == "7"
    assert values["durationSeconds.p95"] == "7200"
    assert values["deliveries.successRate"] == ""
    table = run(capsys, "analytics", "summary", "--email", "alice@example.com", *RANGE)
    assert "durationSeconds.avg" in table
    assert "2850.0" in table
    assert max(len(line) for line in table.splitlines()) <= 80


def test_hourly_table_fits_80_columns(capsys: pytest.CaptureFixture[str], history: History) -> None:
    table = run(capsys, "analytics", "timeseries", "--email", "alice@example.com", *RANGE,
                "--interval", "hour")  # fmt: skip
    lines = table.splitlines()
    assert len(lines) == 1 + 2 + 24
    assert max(len(line) for line in lines) <= 80


def test_each_user_sees_their_own(capsys: pytest.CaptureFixture[str], history: History) -> None:
    out = run(
        capsys, "analytics", "summary", "--email", "bob@example.com", *RANGE, "--format", "json"
    )
    assert json.loads(out)["meetings"] == {"started": 2, "ended": 1, "active": 1}


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--from", "2026-11-02T00:00:00"], "from"),
        (["--from", "2026-11-03T00:00:00Z", "--to", "2026-11-02T00:00:00Z"], "to"),
        (["--from", "2000-01-01T00:00:00Z", "--to", "2026-01-01T00:00:00Z", "--interval", "hour"],
         "interval"),
    ],
)  # fmt: skip
def test_bad_input_exits_1_naming_the_field(
    capsys: pytest.CaptureFixture[str], history: History, argv: list[str], field: str
) -> None:
    assert main(["analytics", "timeseries", "--email", "alice@example.com", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{field}:" in captured.err


def test_unknown_email_exits_1(capsys: pytest.CaptureFixture[str], history: History) -> None:
    assert main(["analytics", "summary", "--email", "nobody@example.com"]) == 1
    assert "nobody@example.com" in capsys.readouterr().err
