from __future__ import annotations

import datetime as dt
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
