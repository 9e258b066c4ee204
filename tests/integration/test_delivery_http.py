"""Deliveries against a real HTTP server on 127.0.0.1: real sockets, real pooling, real TLS."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core import ssrf
from core.config import Settings
from core.services import delivery_states, outbound_http
from tests.callback_receiver import TLS_CA, Answer, CallbackReceiver
from tests.conftest import Account
from tests.deliveries_helpers import attempts, load, make_delivery, make_due, secret_of
from workers.tasks.deliveries import run_delivery

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
def local_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"callback_allowed_networks": LOOPBACK, "callback_timeout_seconds": 1.0}
    )


@pytest.fixture
def http(local_settings: Settings) -> Iterator[requests.Session]:
    session = outbound_http.make_http_session(local_settings.callback_allowed_networks)
    yield session
    session.close()


@pytest.fixture
def attempt(
    session_factory: sessionmaker[Session], local_settings: Settings, http: requests.Session
) -> Callable[[int], delivery_states.Recorded | None]:
    def run(delivery_id: int) -> delivery_states.Recorded | None:
        return run_delivery(session_factory, delivery_id, settings=local_settings, http=http)

    return run


@pytest.fixture
def hooks_test_on_loopback(http: requests.Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any host name resolves to 127.0.0.1, and our test CA is trusted: TLS with a real name."""
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")])
    http.verify = str(TLS_CA)


class TestRealReceiver:
    def test_delivery_arrives_signed_and_verifiable(
        self,
        receiver: CallbackReceiver,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        delivery_id = make_delivery(
            session_factory, account.id, receiver.url("/cb?x=1"), custom={"foo": 123}
        )
        receiver.answer(Answer(status=200, body=b'{"thanks":true}'))
        recorded = attempt(delivery_id)
        assert recorded == delivery_states.Recorded(status="succeeded")
        (got,) = receiver.wait_for(1)
        delivery = load(session_factory, delivery_id)
        assert got.method == "POST"
        assert got.path == "/cb?x=1"
        assert got.body == delivery.body.encode()
        assert got.headers["content-type"] == "application/json"
        assert got.headers["webhook-id"] == delivery.message_id
        assert got.headers["user-agent"].startswith("meetinghooks")
        payload = StandardWebhook(secret_of(session_factory, account.id)).verify(
            got.body, got.headers
        )
        assert payload["customCallbackData"] == {"foo": 123}
        (logged,) = attempts(session_factory, delivery_id)
        assert (logged.status_code, logged.error) == (200, None)
        assert logged.response_body == '{"thanks":true}'

    def test_receiver_down_then_back_gets_the_callback_with_the_same_id(
        self,
        receiver: CallbackReceiver,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, receiver.url())
        receiver.stop()
        recorded = attempt(delivery_id)
        assert recorded is not None
        assert recorded.status == "pending"
        receiver.start()
        make_due(session_factory, delivery_id)
        assert attempt(delivery_id) == delivery_states.Recorded(status="succeeded")
        (got,) = receiver.wait_for(1)
        assert got.headers["webhook-id"] == load(session_factory, delivery_id).message_id
        errors = [a.error for a in attempts(session_factory, delivery_id)]
        assert errors == ["connection-error", None]

    def test_a_cookie_a_receiver_sets_is_never_sent_back(
        self,
        receiver: CallbackReceiver,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        first, second = (make_delivery(session_factory, account.id, receiver.url()) for _ in "ab")
        receiver.answer(Answer(status=204, headers={"Set-Cookie": "session=abc; Path=/"}))
        assert attempt(first) == delivery_states.Recorded(status="succeeded")
        assert attempt(second) == delivery_states.Recorded(status="succeeded")
        got = receiver.wait_for(2)
        assert [request.headers.get("cookie") for request in got] == [None, None]

    def test_slow_receiver_times_out(
        self,
        receiver: CallbackReceiver,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, receiver.url())
        receiver.answer(Answer(status=200, delay=15.0))
        started = time.monotonic()
        attempt(delivery_id)
        # Cut at the 1 s timeout (2 s at the latest); waiting for the answer would take 15 s.
        assert time.monotonic() - started < 8.0
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == "timeout"
        assert logged.status_code is None
        assert load(session_factory, delivery_id).status == "pending"

    @pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
    def test_receiver_trickling_its_headers_is_cut_off_at_twice_the_timeout(
        self,
        tls: bool,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
        hooks_test_on_loopback: None,
    ) -> None:
        # One byte every 0.2 s never trips the 1 s read timeout; the headers would take 45 s.
        server = CallbackReceiver(tls=tls).start()
        try:
            delivery_id = make_delivery(session_factory, account.id, server.url(host="hooks.test"))
            server.answer(Answer(status=200, trickle=0.2))
            started = time.monotonic()
            attempt(delivery_id)
            elapsed = time.monotonic() - started
        finally:
            server.stop()
        # Cut at 2 x CALLBACK_TIMEOUT_SECONDS; slack for a loaded machine, far below the 45 s.
        assert 2.0 <= elapsed < 10.0
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == "timeout"
        assert logged.status_code is None
        assert load(session_factory, delivery_id).status == "pending"

    def test_huge_response_body_is_cut_at_4_kib(
        self,
        receiver: CallbackReceiver,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, receiver.url())
        receiver.answer(Answer(status=500, body=b"x" * 2_000_000))
        attempt(delivery_id)
        (logged,) = attempts(session_factory, delivery_id)
        assert (logged.status_code, logged.error) == (500, "http-500")
        assert logged.response_body == "x" * 4096

    def test_redirect_is_not_followed(
        self,
        receiver: CallbackReceiver,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, receiver.url("/old"))
        receiver.answer(Answer(status=307, headers={"Location": receiver.url("/new")}))
        attempt(delivery_id)
        time.sleep(0.2)
        assert [r.path for r in receiver.received] == ["/old"]
        (logged,) = attempts(session_factory, delivery_id)
        assert (logged.status_code, logged.error) == (307, "redirect")

    def test_without_the_allow_list_loopback_is_refused_at_connect(
        self,
        receiver: CallbackReceiver,
        session_factory: sessionmaker[Session],
        local_settings: Settings,
        account: Account,
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, receiver.url())
        strict = local_settings.model_copy(update={"callback_allowed_networks": ()})
        with outbound_http.make_http_session(()) as http:
            run_delivery(session_factory, delivery_id, settings=strict, http=http)
        assert receiver.received == []
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == "ssrf-refused"

    def test_keep_alive_reuses_one_connection(
        self,
        receiver: CallbackReceiver,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        lookups: list[str] = []

        def counting(host: str, port: int) -> list[ssrf.IPAddress]:
            lookups.append(host)
            return [ipaddress.ip_address("127.0.0.1")]

        monkeypatch.setattr(ssrf, "resolve", counting)
        ids = [
            make_delivery(session_factory, account.id, receiver.url(host="hooks.test"))
            for _ in range(3)
        ]
        for delivery_id in ids:
            assert attempt(delivery_id) == delivery_states.Recorded(status="succeeded")
        assert len(receiver.wait_for(3)) == 3
        assert lookups == ["hooks.test"]  # one connection, one lookup, reused

    def test_https_to_a_hostname_pinned_to_the_checked_address(
        self,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
        hooks_test_on_loopback: None,
    ) -> None:
        server = CallbackReceiver(tls=True).start()
        try:
            delivery_id = make_delivery(session_factory, account.id, server.url(host="hooks.test"))
            assert attempt(delivery_id) == delivery_states.Recorded(status="succeeded")
            (got,) = server.wait_for(1)
            assert got.server_name == "hooks.test"
            wrong = make_delivery(session_factory, account.id, server.url(host="wrong.test"))
            attempt(wrong)
            (logged,) = attempts(session_factory, wrong)
            assert logged.error == "tls-error"
        finally:
            server.stop()
