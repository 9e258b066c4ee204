from __future__ import annotations

from flask.testing import FlaskClient

from tests.conftest import Account


def test_viewer_page_by_meeting_code_never_shows_organizer_code(
    client: FlaskClient, account: Account
) -> None:
    started = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    ).get_json()
    page = client.get(started["viewerLink"].removeprefix("https://meet.example.test"))
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert b"Alice Example" in page.data
    assert started["audioConference"]["conferenceId"].encode() in page.data
    assert started["audioConference"]["organizerCode"].encode() not in page.data


def test_viewer_page_by_personal_url(client: FlaskClient, account: Account) -> None:
    client.post("/v1/meetings/start", json={"startWithPersonalUrl": True}, headers=account.headers)
    page = client.get("/alice")
    assert page.status_code == 200
    assert b"has not started yet" in page.data


def test_unknown_viewer_page_is_404(client: FlaskClient) -> None:
    assert client.get("/nobody-here").status_code == 404
    assert client.get("/123456789").status_code == 404


def test_audio_numbers_page_names_the_conference(client: FlaskClient) -> None:
    page = client.get("/audio/numbers?conferenceId=123456789")
    assert page.status_code == 200
    assert b"123456789" in page.data
    assert b"+1 " in page.data


def test_audio_numbers_page_escapes_nothing_it_should_not_show(client: FlaskClient) -> None:
    page = client.get("/audio/numbers?conferenceId=<script>alert(1)</script>")
    assert page.status_code == 200
    assert b"<script>" not in page.data


def test_viewer_link_with_query_parameters_opens_the_page(
    client: FlaskClient, account: Account
) -> None:
    started = client.post(
        "/v1/meetings/start",
        json={"startWithPersonalUrl": True, "viewerMode": "headless", "viewerAppDetection": False},
        headers=account.headers,
    ).get_json()
    assert started["viewerLink"].endswith("/alice?viewerMode=headless&viewerAppDetection=false")
    page = client.get(started["viewerLink"].removeprefix("https://meet.example.test"))
    assert page.status_code == 200
    assert started["audioConference"]["organizerCode"].encode() not in page.data


def test_conference_numbers_url_of_a_start_opens_the_page(
    client: FlaskClient, account: Account
) -> None:
    audio = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    ).get_json()["audioConference"]
    page = client.get(audio["conferenceCallNumbersUrl"].removeprefix("https://meet.example.test"))
    assert page.status_code == 200
    assert audio["conferenceId"].encode() in page.data
    assert audio["organizerCode"].encode() not in page.data
