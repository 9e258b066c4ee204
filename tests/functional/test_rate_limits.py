"""Rate limits (SPEC 3): per access token on the API, the platform's ingest on its own.

Every limit here is per hour, so that no window ends in the middle of a test.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_limiter import Limiter
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from core.config import Settings
from core.models import Event
from core.security import hash_token
from receiver import create_app
from receiver.limits import EXTENSION
from tests.conftest import INGEST_SECRET, Account, Enqueued
from tests.platform_events import event_body, new_msg_id, signed_headers

HOUR = 3600
UNKNOWN_MEETING = 424242  # stored, never delivered: the ingest path alone is exercised
OTHER_SECRET = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(
    settings: Settings, session_factory: sessionmaker[Session], enqueued: Enqueued
) -> MakeApp:
    def make(**changes: object) -> Flask:
        app = create_app(
            settings.model_copy(update=changes), session_factory=session_factory, enqueue=enqueued
        )
        app.testing = True
        return app

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def limiter_of(app: Flask) -> Limiter:
    limiter: Limiter = app.extensions[EXTENSION]
    return limiter


def post_event(client: FlaskClient, msg_id: str, *, secret: str = INGEST_SECRET) -> TestResponse:
    at = dt.datetime.now(dt.UTC)
    body = event_body(UNKNOWN_MEETING, at=at)
    return client.post(
        "/v1/events", data=body, headers=signed_headers(msg_id, body, at, secret=secret)
    )


def post_signed_event(client: FlaskClient, msg_id: str | None = None) -> tuple[str, int]:
    msg_id = msg_id or new_msg_id()
    return msg_id, post_event(client, msg_id).status_code


def assert_rate_limited(response: TestResponse, *, max_retry_after: int = HOUR) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"Message", "code", "errors"}
    assert body["code"] == "rate-limited"
    assert body["errors"] == []
    assert "rate limit" in body["Message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= max_retry_after


def stored(engine: Engine, msg_id: str) -> int:
    with engine.connect() as conn:  # a fresh read each time: the receiver commits in between
        query = sa.select(sa.func.count()).select_from(Event)
        return int(conn.scalar(query.where(Event.source_event_id == msg_id)) or 0)


class TestApiLimit:
    def test_refuses_with_429_retry_after_and_the_error_shape_once_spent(
        self, make_app: MakeApp, account: Account
    ) -> None:
        client = make_app(rate_limit_api="3/hour").test_client()

        seen = [client.get("/v1/user", headers=account.headers) for _ in range(3)]
        refused = client.get("/v1/user", headers=account.headers)

        assert [r.status_code for r in seen] == [200, 200, 200]
        assert [r.headers["X-RateLimit-Remaining"] for r in seen] == ["2", "1", "0"]
        assert seen[0].headers["X-RateLimit-Limit"] == "3"
        assert "Retry-After" not in seen[0].headers
        assert_rate_limited(refused)
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.headers["X-RateLimit-Reset"]) > time.time()

    def test_one_budget_per_token_across_every_endpoint(
        self, make_app: MakeApp, account: Account
    ) -> None:
        client = make_app(rate_limit_api="3/hour").test_client()

        statuses = [
            client.get("/v1/user", headers=account.headers).status_code,
            client.get("/v1/meetings", headers=account.headers).status_code,
            client.get("/v1/webhooks/deliveries", headers=account.headers).status_code,
        ]

        assert statuses == [200, 200, 200]
        assert_rate_limited(client.get("/v1/alerts/rules", headers=account.headers))
        assert_rate_limited(client.post("/v1/meetings/start", headers=account.headers, json={}))

    def test_a_spent_token_leaves_other_tokens_served(
        self, make_app: MakeApp, make_account: Callable[..., Account]
    ) -> None:
        alice, bob = make_account(), make_account()
        client = make_app(rate_limit_api="2/hour").test_client()
        for _ in range(2):
            assert client.get("/v1/user", headers=alice.headers).status_code == 200
        assert_rate_limited(client.get("/v1/user", headers=alice.headers))

        served = [client.get("/v1/user", headers=bob.headers).status_code for _ in range(2)]

        assert served == [200, 200]
        assert_rate_limited(client.get("/v1/user", headers=alice.headers))

    def test_two_tokens_of_one_user_are_counted_apart(
        self, make_app: MakeApp, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        from core.services import accounts  # noqa: PLC0415

        with session_factory.begin() as session:
            user = session.get(type(account.user), account.id)
            assert user is not None
            other = accounts.create_token(session, user=user).token
        client = make_app(rate_limit_api="1/hour").test_client()
        assert client.get("/v1/user", headers=account.headers).status_code == 200
        assert_rate_limited(client.get("/v1/user", headers=account.headers))

        response = client.get("/v1/user", headers={"Authorization": f"Bearer {other}"})

        assert response.status_code == 200

    def test_requests_without_a_token_share_a_budget_per_address(
        self, make_app: MakeApp, account: Account
    ) -> None:
        client = make_app(rate_limit_api="2/hour").test_client()

        refused = [client.get("/v1/user").status_code for _ in range(2)]

        assert refused == [401, 401]
        assert_rate_limited(client.get("/v1/meetings"))
        assert client.get("/v1/user", headers=account.headers).status_code == 200

    def test_the_counter_key_never_holds_the_token(
        self, make_app: MakeApp, account: Account
    ) -> None:
        app = make_app(rate_limit_api="5/hour")
        client = app.test_client()

        client.get("/v1/user", headers=account.headers)

        keys = list(limiter_of(app).storage.storage)  # type: ignore[attr-defined]
        assert keys, "the request was not counted"
        assert not [key for key in keys if account.token in key]
        assert [key for key in keys if hash_token(account.token) in key]

    def test_refusals_are_counted_by_limit_with_no_token_in_the_labels(
        self, make_app: MakeApp, account: Account
    ) -> None:
        client = make_app(rate_limit_api="1/hour").test_client()
        before = REGISTRY.get_sample_value("meetinghooks_rate_limited_total", {"limit": "api"})
        client.get("/v1/user", headers=account.headers)

        for _ in range(3):
            assert client.get("/v1/user", headers=account.headers).status_code == 429

        after = REGISTRY.get_sample_value("meetinghooks_rate_limited_total", {"limit": "api"})
        assert (after or 0) - (before or 0) == 3
        exposed = client.get("/metrics").get_data(as_text=True)
        assert "meetinghooks_rate_limited_total" in exposed
        assert account.token not in exposed
        assert hash_token(account.token) not in exposed
        assert account.token not in generate_latest(REGISTRY).decode()


class TestIngestLimit:
    def test_refuses_with_429_and_stores_nothing_then_takes_the_retry(
        self, make_app: MakeApp, observer_engine: Engine
    ) -> None:
        app = make_app(rate_limit_ingest="2/hour")
        client = app.test_client()
        accepted = [post_signed_event(client) for _ in range(2)]
        msg_id = new_msg_id()

        refused = post_event(client, msg_id)

        assert [status for _, status in accepted] == [202, 202]
        assert_rate_limited(refused)
        assert "X-RateLimit-Remaining" not in refused.headers
        assert stored(observer_engine, msg_id) == 0
        limiter_of(app).reset()  # the window ends
        retried = post_signed_event(client, msg_id)
        assert retried == (msg_id, 202)
        assert stored(observer_engine, msg_id) == 1
        assert post_signed_event(client, msg_id) == (msg_id, 200)  # a duplicate, stored once
        assert stored(observer_engine, msg_id) == 1

    def test_unsigned_requests_never_spend_the_platform_budget(self, make_app: MakeApp) -> None:
        client = make_app(rate_limit_ingest="2/hour").test_client()

        forged = [
            post_event(client, new_msg_id(), secret=OTHER_SECRET).status_code for _ in range(5)
        ]
        unsigned = [client.post("/v1/events", json={}).status_code for _ in range(5)]

        assert forged == [401] * 5
        assert unsigned == [401] * 5
        assert [post_signed_event(client)[1] for _ in range(2)] == [202, 202]
        assert_rate_limited(post_event(client, new_msg_id()))

    def test_a_spent_ingest_leaves_the_api_served(
        self, make_app: MakeApp, account: Account
    ) -> None:
        client = make_app(rate_limit_ingest="1/hour", rate_limit_api="5/hour").test_client()
        assert post_signed_event(client)[1] == 202
        assert post_signed_event(client)[1] == 429

        response = client.get("/v1/user", headers=account.headers)

        assert response.status_code == 200
        assert response.headers["X-RateLimit-Remaining"] == "4"  # ingest spent none of it

    def test_a_spent_token_leaves_the_ingest_served(
        self, make_app: MakeApp, account: Account
    ) -> None:
        client = make_app(rate_limit_ingest="2/hour", rate_limit_api="1/hour").test_client()
        client.get("/v1/user", headers=account.headers)
        assert_rate_limited(client.get("/v1/user", headers=account.headers))

        assert [post_signed_event(client)[1] for _ in range(2)] == [202, 202]

    def test_refusals_are_counted_under_the_ingest_limit(self, make_app: MakeApp) -> None:
        client = make_app(rate_limit_ingest="1/hour").test_client()
        labels = {"limit": "ingest"}
        before = REGISTRY.get_sample_value("meetinghooks_rate_limited_total", labels) or 0

        statuses = [post_signed_event(client)[1] for _ in range(3)]

        assert statuses == [202, 429, 429]
        after = REGISTRY.get_sample_value("meetinghooks_rate_limited_total", labels) or 0
        assert after - before == 2


class TestUnlimited:
    def test_health_metrics_openapi_and_pages_are_never_limited(
        self, make_app: MakeApp, account: Account
    ) -> None:
        client = make_app(rate_limit_api="1/hour", rate_limit_ingest="1/hour").test_client()
        client.get("/v1/user", headers=account.headers)
        assert client.get("/v1/user", headers=account.headers).status_code == 429

        for path in ("/healthz", "/metrics", "/openapi.json", "/audio/numbers"):
            statuses = {client.get(path, headers=account.headers).status_code for _ in range(5)}
            assert statuses == {200}, path

    def test_off_installs_no_limiter(self, make_app: MakeApp, account: Account) -> None:
        app = make_app(rate_limit_api=None, rate_limit_ingest=None)
        client = app.test_client()

        statuses = {client.get("/v1/user", headers=account.headers).status_code for _ in range(50)}

        assert statuses == {200}
        assert EXTENSION not in app.extensions
        response = client.get("/v1/user", headers=account.headers)
        assert "X-RateLimit-Limit" not in response.headers

    def test_off_for_ingest_keeps_the_api_limit(self, make_app: MakeApp, account: Account) -> None:
        client = make_app(rate_limit_api="1/hour", rate_limit_ingest=None).test_client()

        assert [post_signed_event(client)[1] for _ in range(20)] == [202] * 20
        client.get("/v1/user", headers=account.headers)
        assert_rate_limited(client.get("/v1/user", headers=account.headers))


class TestEmbeddedMode:
    def test_counts_in_memory_with_no_server(
        self,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        monkeypatch.chdir(tmp_path)  # the embedded mode makes ./var
        embedded = Settings.from_env({"RATE_LIMIT_API": "2/hour"})
        assert embedded.embedded
        app = create_app(embedded, session_factory=session_factory, enqueue=Enqueued(calls=[]))
        client = app.test_client()

        statuses = [client.get("/v1/user", headers=account.headers).status_code for _ in range(2)]

        assert statuses == [200, 200]
        assert_rate_limited(client.get("/v1/user", headers=account.headers))
        assert type(limiter_of(app).storage).__name__ == "MemoryStorage"


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a Redis that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


class TestStorageDown:
    def test_a_redis_that_refuses_connections_leaves_the_api_served_and_limited(
        self, make_app: MakeApp, account: Account
    ) -> None:
        down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
        client = make_app(rate_limit_api="2/hour", rate_limit_storage_url=down).test_client()

        statuses = [client.get("/v1/user", headers=account.headers).status_code for _ in range(2)]

        assert statuses == [200, 200]
        # Still limited meanwhile, by this process alone.
        assert_rate_limited(client.get("/v1/user", headers=account.headers))

    @pytest.mark.timeout(120)
    def test_a_redis_that_hangs_holds_a_request_about_a_second_at_most(
        self, make_app: MakeApp, account: Account, hung_redis: str
    ) -> None:
        client = make_app(rate_limit_api="2/hour", rate_limit_storage_url=hung_redis).test_client()

        started = time.monotonic()
        first = client.get("/v1/user", headers=account.headers)
        took = time.monotonic() - started

        assert first.status_code == 200
        assert took < 15  # 1 s storage timeout, no retries; generous for a loaded machine
        assert client.get("/v1/user", headers=account.headers).status_code == 200
        assert_rate_limited(client.get("/v1/user", headers=account.headers))
        assert client.get("/healthz").status_code == 200
