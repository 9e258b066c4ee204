from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests_mock as rm

from core.errors import ConfigError
from meetinghooks.cli import main
from meetinghooks.simulate.driver import Aborted, Driver, Pacer, Setup
from meetinghooks.simulate.plan import MeetingPlan
from meetinghooks.simulate.report import Ledger
from meetinghooks.simulate.target import check_url

BASE = "http://127.0.0.1:8000"


class TestLoopbackGuard:
    @pytest.mark.parametrize(
        "url", ["http://192.0.2.10:8000", "https://10.1.2.3", "http://[2001:db8::1]:80"]
    )
    def test_the_command_refuses_a_non_loopback_service_before_sending_anything(
        self, url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # pytest-socket would turn any connection to these hosts into an error of its own.
        assert main(["simulate", "--url", url, "--meetings", "1"]) == 2
        err = capsys.readouterr().err
        assert "not a loopback address" in err
        assert "--allow-remote" in err

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:8000/", "http://localhost:9000", "http://[::1]:8000"]
    )
    def test_loopback_is_accepted(self, url: str) -> None:
        assert check_url(url, allow_remote=False) == url.rstrip("/")

    def test_allow_remote_lets_it_through(self) -> None:
        assert check_url("http://192.0.2.10:8000", allow_remote=True) == "http://192.0.2.10:8000"

    def test_not_a_url(self) -> None:
        with pytest.raises(ConfigError, match="--url must be an http"):
            check_url("127.0.0.1:8000", allow_remote=False)


def test_without_a_token_or_a_database_it_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "BROKER_URL", "MEETINGHOOKS_TOKEN", "INGEST_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert main(["simulate", "--meetings", "1"]) == 2
    assert "no ingest secret" in capsys.readouterr().err
    with rm.Mocker() as mock:
        mock.get(f"{BASE}/healthz", json={"status": "ok"})
        assert main(["simulate", "--meetings", "1", "--ingest", "0"]) == 2
    assert "no access token: pass --token" in capsys.readouterr().err
    assert not (tmp_path / "var").exists()  # it created no database of its own


def driver() -> tuple[Driver, Ledger]:
    ledger = Ledger()
    setup = Setup(
        BASE, "tok", "http://127.0.0.1:9/hooks/r", "r", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )
    return Driver(setup, ledger, Pacer(1000)), ledger


def started(url: str = "http://elsewhere.example/presenter/abc") -> dict[str, object]:
    ok = {"registered": True, "webhookId": "wh_1"}
    return {
        "meetingId": 5,
        "presenterLink": url,
        "webhooksStatus": {"meeting.start": ok, "meeting.end": ok},
    }


class TestDriver:
    def test_a_presenter_meeting_posts_its_link_to_the_service_we_load(
        self, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(f"{BASE}/v1/meetings/start", status_code=201, json=started())
        presenter = requests_mock.post(f"{BASE}/presenter/abc", json={})
        requests_mock.post(f"{BASE}/v1/meetings/5/end", json={})
        run, ledger = driver()
        run.run_meeting(MeetingPlan(index=0, via_ingest=False, ends=True))
        assert presenter.call_count == 1  # not elsewhere.example, where the link pointed
        assert sorted(ledger.expected) == [(5, "meeting.end"), (5, "meeting.start")]
        assert ledger.expected[(5, "meeting.start")].final is None
        sent = json.loads(requests_mock.request_history[0].text)
        assert sent["webhooks"]["meeting.end"]["callbackUrl"] == "http://127.0.0.1:9/hooks/r"

    def test_ingest_waits_out_a_429_and_a_duplicate_must_be_recognised(
        self, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(f"{BASE}/v1/meetings/start", status_code=201, json=started())
        requests_mock.post(
            f"{BASE}/v1/events",
            [
                {"status_code": 429, "headers": {"Retry-After": "0"}},
                {"status_code": 202, "json": {}},
                {"status_code": 202, "json": {}},  # the duplicate, stored again: a bug
                {"status_code": 202, "json": {}},
            ],
        )
        run, ledger = driver()
        run.run_meeting(
            MeetingPlan(
                index=0, via_ingest=True, ends=True, duplicate_start=True, length_seconds=60
            )
        )
        assert ledger.retried == 1
        assert ledger.sent == {
            "create meeting": 1,
            "ingest start": 2,
            "ingest duplicate": 1,
            "ingest end": 1,
        }
        assert ledger.duplicates_stored == 1
        end = ledger.expected[(5, "meeting.end")].final
        assert end is not None
        assert end["durationSeconds"] == 60
        starts = [
            json.loads(r.text) for r in requests_mock.request_history if r.path == "/v1/events"
        ]
        assert starts[0]["timestamp"] == end["startedAt"]
        assert starts[-1]["timestamp"] == end["endedAt"]

    def test_out_of_order_sends_the_end_first(self, requests_mock: rm.Mocker) -> None:
        requests_mock.post(f"{BASE}/v1/meetings/start", status_code=201, json=started())
        events = requests_mock.post(f"{BASE}/v1/events", status_code=202, json={})
        run, _ = driver()
        run.run_meeting(
            MeetingPlan(index=0, via_ingest=True, ends=True, out_of_order=True, length_seconds=5)
        )
        assert [json.loads(r.text)["type"] for r in events.request_history] == [
            "meeting.end",
            "meeting.start",
        ]

    def test_a_refused_callback_url_stops_the_run_and_names_the_setting(
        self, requests_mock: rm.Mocker
    ) -> None:
        refused = {"registered": False, "code": "callback-url-forbidden", "message": "private"}
        body = {**started(), "webhooksStatus": {"meeting.start": refused, "meeting.end": refused}}
        requests_mock.post(f"{BASE}/v1/meetings/start", status_code=201, json=body)
        run, _ = driver()
        with pytest.raises(Aborted, match=r"CALLBACK_ALLOWED_NETWORKS=127\.0\.0\.0/8"):
            run.run_meeting(MeetingPlan(index=0, via_ingest=False, ends=True))

    def test_an_error_answer_is_counted_with_its_code(self, requests_mock: rm.Mocker) -> None:
        requests_mock.post(f"{BASE}/v1/meetings/start", status_code=201, json=started())
        requests_mock.post(f"{BASE}/v1/events", status_code=401, json={"code": "invalid-signature"})
        run, ledger = driver()
        run.run_meeting(MeetingPlan(index=0, via_ingest=True, ends=False, length_seconds=5))
        assert ledger.failed == {"ingest start: 401 invalid-signature": 1}
        assert ledger.expected == {}


@pytest.mark.parametrize("listen", ["8000", "127.0.0.1:http", ":0", "127.0.0.1:70000"])
def test_a_bad_listen_address_is_refused(
    listen: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEETINGHOOKS_TOKEN", "tok")
    with rm.Mocker() as mock:
        mock.get(f"{BASE}/healthz", json={"status": "ok"})
        mock.get(
            f"{BASE}/v1/webhooks/signing-secret",
            json={"signingSecret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        )
        assert main(["simulate", "--ingest", "0", "--listen", listen, "--url", BASE]) == 2
    assert "--listen must be HOST:PORT" in capsys.readouterr().err
