from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gunicorn.config import Config

from core.config import Settings
from meetinghooks.access_log import RedactingLogger, redact
from meetinghooks.cli import _gunicorn_argv

TOKEN = "dmWgSsdfDpPiyUsEEdxqiidetDCd8XLWmyYm9ohprdM"
ACCESS_TOKEN = "mhat_Q2lW7Xb1m0cYq3r5t7u9w1y3A5C7E9G1I3K5M7O9Q1S"
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class FakeResponse:
    status: str = "200 OK"
    sent: int = 673
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FakeRequest:
    headers: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def gunicorn_logs(tmp_path: Path) -> Iterator[tuple[RedactingLogger, Path, Path]]:
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    cfg = Config()
    cfg.set("accesslog", str(access))
    cfg.set("errorlog", str(errors))
    # Every atom that can carry a URL or a credential, as an operator might configure it.
    cfg.set(
        "access_log_format",
        '%(h)s "%(r)s" %(s)s path=%(U)s query=%(q)s "%(f)s" auth="%({authorization}i)s"',
    )
    logger = RedactingLogger(cfg)
    yield logger, access, errors
    for name in ("gunicorn.access", "gunicorn.error"):
        for handler in logging.getLogger(name).handlers:
            handler.close()


def _access(logger: RedactingLogger, method: str, raw_uri: str, **headers: str) -> None:
    path, _, query = raw_uri.partition("?")
    environ = {
        "REQUEST_METHOD": method,
        "RAW_URI": raw_uri,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        **{f"HTTP_{name.upper()}": value for name, value in headers.items()},
    }
    request = FakeRequest(headers=[(name.upper(), value) for name, value in headers.items()])
    logger.access(FakeResponse(), request, environ, dt.timedelta(milliseconds=3))


def _flush() -> None:
    for name in ("gunicorn.access", "gunicorn.error"):
        for handler in logging.getLogger(name).handlers:
            handler.flush()


def test_presenter_token_is_redacted_in_the_request_line_path_and_referer(
    gunicorn_logs: tuple[RedactingLogger, Path, Path],
) -> None:
    logger, access, _ = gunicorn_logs
    _access(logger, "GET", f"/presenter/{TOKEN}")
    _access(
        logger, "POST", f"/presenter/{TOKEN}", referer=f"http://127.0.0.1:8000/presenter/{TOKEN}"
    )
    _flush()
    lines = access.read_text().splitlines()
    assert len(lines) == 2
    assert all(TOKEN not in line for line in lines)
    assert (
        '127.0.0.1 "GET /presenter/<redacted> HTTP/1.1" 200 path=/presenter/<redacted> query= "-"'
        ' auth="-"'
    ) in lines[0]
    assert '"http://127.0.0.1:8000/presenter/<redacted>"' in lines[1]


def test_credentials_in_a_query_string_or_a_logged_header_are_redacted(
    gunicorn_logs: tuple[RedactingLogger, Path, Path],
) -> None:
    logger, access, _ = gunicorn_logs
    _access(
        logger,
        "GET",
        f"/v1/user?access_token={ACCESS_TOKEN}&secret={SIGNING_SECRET}",
        authorization=f"Bearer {ACCESS_TOKEN}",
    )
    _flush()
    line = access.read_text()
    assert ACCESS_TOKEN.removeprefix("mhat_") not in line
    assert SIGNING_SECRET.removeprefix("whsec_") not in line
    assert "access_token=mhat_<redacted>&secret=whsec_<redacted>" in line
    assert 'auth="Bearer mhat_<redacted>"' in line


def test_other_requests_are_logged_unchanged(
    gunicorn_logs: tuple[RedactingLogger, Path, Path],
) -> None:
    logger, access, _ = gunicorn_logs
    _access(logger, "GET", "/v1/webhooks/deliveries?meetingId=1&status=failed")
    _flush()
    (line,) = access.read_text().splitlines()
    assert (
        '127.0.0.1 "GET /v1/webhooks/deliveries?meetingId=1&status=failed HTTP/1.1" 200'
        ' path=/v1/webhooks/deliveries query=meetingId=1&status=failed "-" auth="-"'
    ) in line


def test_gunicorns_error_log_is_redacted_too(
    gunicorn_logs: tuple[RedactingLogger, Path, Path],
) -> None:
    logger, _, errors = gunicorn_logs
    logger.error("Error handling request %s", f"/presenter/{TOKEN}")
    _flush()
    text = errors.read_text()
    assert "Error handling request /presenter/<redacted>" in text
    assert TOKEN not in text


@pytest.mark.parametrize(
    "text",
    [
        f"GET /presenter/{TOKEN} HTTP/1.1",
        f"GET /presenter%2F{TOKEN} HTTP/1.1",  # werkzeug routes it to the presenter page too
        f"GET /PRESENTER/{TOKEN}?x=1 HTTP/1.1",
        f"GET //presenter/{TOKEN}/ HTTP/1.1",
    ],
)
def test_every_spelling_of_a_presenter_path_loses_its_token(text: str) -> None:
    assert TOKEN not in redact(text)
    assert "<redacted>" in redact(text)


def test_the_serve_command_runs_gunicorn_with_the_redacting_logger() -> None:
    settings = Settings(database_url="sqlite://", broker_url="memory://")
    argv = _gunicorn_argv(settings)
    assert argv[1:3] == ["-m", "gunicorn"]
    cfg = Config()
    parsed = cfg.parser().parse_args(argv[3:])
    for name, value in vars(parsed).items():
        if value is not None and name != "args":
            cfg.set(name.lower(), value)
    assert cfg.logger_class is RedactingLogger
    assert cfg.accesslog == "-"


@pytest.fixture
def json_gunicorn_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[RedactingLogger, Path, Path]]:
    monkeypatch.setenv("LOG_FORMAT", "json")
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    cfg = Config()
    cfg.set("accesslog", str(access))
    cfg.set("errorlog", str(errors))
    logger = RedactingLogger(cfg)
    yield logger, access, errors
    for name in ("gunicorn.access", "gunicorn.error"):
        for handler in logging.getLogger(name).handlers:
            handler.close()


def test_json_access_lines_have_the_requests_fields_and_its_id(
    json_gunicorn_logs: tuple[RedactingLogger, Path, Path],
) -> None:
    logger, access, _ = json_gunicorn_logs
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/v1/events",
        "PATH_INFO": "/v1/events",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "platform/1.0",
    }
    response = FakeResponse(status="202 ACCEPTED", headers=[("X-Request-Id", "abc-1")])
    logger.access(response, FakeRequest(), environ, dt.timedelta(milliseconds=12, microseconds=5))
    _flush()
    (line,) = [json.loads(text) for text in access.read_text().splitlines()]
    assert {key: line[key] for key in ("method", "path", "status", "request_id")} == {
        "method": "POST",
        "path": "/v1/events",
        "status": 202,
        "request_id": "abc-1",
    }
    assert line["duration_ms"] == 12.005
    assert (line["event"], line["logger"], line["user_agent"]) == (
        "http.request",
        "gunicorn.access",
        "platform/1.0",
    )
    assert "query" not in line  # empty fields are left out


def test_json_access_lines_are_redacted_field_by_field(
    json_gunicorn_logs: tuple[RedactingLogger, Path, Path],
) -> None:
    logger, access, errors = json_gunicorn_logs
    _access(
        logger,
        "POST",
        f"/presenter/{TOKEN}?access_token={ACCESS_TOKEN}&s={SIGNING_SECRET}",
        referer=f"http://127.0.0.1:8000/presenter/{TOKEN}",
    )
    logger.error("Error handling request %s", f"/presenter/{TOKEN}")
    _flush()
    text = access.read_text() + errors.read_text()
    assert TOKEN not in text
    assert ACCESS_TOKEN.removeprefix("mhat_") not in text
    assert SIGNING_SECRET.removeprefix("whsec_") not in text
    (line,) = [json.loads(text) for text in access.read_text().splitlines()]
    assert line["path"] == "/presenter/<redacted>"
    assert line["query"] == "access_token=mhat_<redacted>&s=whsec_<redacted>"
    assert line["referer"] == "http://127.0.0.1:8000/presenter/<redacted>"
    (error,) = [json.loads(text) for text in errors.read_text().splitlines()]
    assert error["event"] == "Error handling request /presenter/<redacted>"
    assert error["level"] == "error"


def test_text_access_lines_end_with_the_request_id(
    gunicorn_logs: tuple[RedactingLogger, Path, Path],
) -> None:
    logger, access, _ = gunicorn_logs
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/healthz",
        "PATH_INFO": "/healthz",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    response = FakeResponse(headers=[("X-Request-Id", "abc-2")])
    logger.access(response, FakeRequest(), environ, dt.timedelta(milliseconds=1))
    _flush()
    assert "request_id=abc-2" in access.read_text()
