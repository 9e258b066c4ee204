from __future__ import annotations

import re
from html.parser import HTMLParser

import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from core.models import Meeting
from tests.conftest import Account

# Set on the meeting by the tests, so no random value can make them pass or fail by chance:
# no fixed text of the pages holds this number, and random codes are 9 digits long.
ORGANIZER_CODE = "4711"


class _Numbers(HTMLParser):
    """Collect every whole number in a page's text and attribute values, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for _name, value in attrs:
            self.found.update(re.findall(r"\d+", value or ""))

    def handle_data(self, data: str) -> None:
        self.found.update(re.findall(r"\d+", data))


def numbers_in(page: bytes) -> set[str]:
    """Return the whole numbers that a page shows or links to."""
    parser = _Numbers()
    parser.feed(page.decode())
    parser.close()
    return parser.found


def set_organizer_code(session_factory: sessionmaker[Session]) -> None:
    """Give every meeting the organizer code ORGANIZER_CODE."""
    with session_factory.begin() as session:
        session.execute(sa.update(Meeting).values(organizer_code=ORGANIZER_CODE))


def test_viewer_page_by_meeting_code_never_shows_organizer_code(
    client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    started = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    ).get_json()
    set_organizer_code(session_factory)
    page = client.get(started["viewerLink"].removeprefix("https://meet.example.test"))
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert b"Alice Example" in page.data
    assert started["audioConference"]["conferenceId"] in numbers_in(page.data)
    assert ORGANIZER_CODE not in numbers_in(page.data)


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
    client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    started = client.post(
        "/v1/meetings/start",
        json={"startWithPersonalUrl": True, "viewerMode": "headless", "viewerAppDetection": False},
        headers=account.headers,
    ).get_json()
    assert started["viewerLink"].endswith("/alice?viewerMode=headless&viewerAppDetection=false")
    set_organizer_code(session_factory)
    page = client.get(started["viewerLink"].removeprefix("https://meet.example.test"))
    assert page.status_code == 200
    assert ORGANIZER_CODE not in numbers_in(page.data)


def test_conference_numbers_url_of_a_start_opens_the_page(
    client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    audio = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    ).get_json()["audioConference"]
    set_organizer_code(session_factory)
    page = client.get(audio["conferenceCallNumbersUrl"].removeprefix("https://meet.example.test"))
    assert page.status_code == 200
    assert audio["conferenceId"] in numbers_in(page.data)
    assert ORGANIZER_CODE not in numbers_in(page.data)
