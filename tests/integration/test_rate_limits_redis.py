"""Rate-limit counters in a real Redis: shared by every receiver, and none lost to an outage.

Each test has a key prefix of its own (BROKER_KEY_PREFIX) on TEST_REDIS_URL, deleted before
and after, so runs sharing the server never meet. Limits are per hour: no window ends mid-test.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.security import hash_token
from receiver import create_app
from tests.conftest import Account, Enqueued
from tests.integration.conftest import TcpProxy, redis_keys, wait_until
from tests.platform_events import event_body, new_msg_id, signed_headers

pytestmark = pytest.mark.integration

_counter = itertools.count()


@dataclass(frozen=True)
class SharedRedis:
    """TEST_REDIS_URL and this test's key prefix there."""

    url: str
    prefix: str

    def counter_keys(self) -> list[str]:
        client = redis.Redis.from_url(self.url, socket_timeout=5, decode_responses=True)
        try:
            return list(client.scan_iter(match=f"{self.prefix}*", count=500))
        finally:
            client.close()

    def ttl(self, key: str) -> int:
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            return int(client.ttl(key))
        finally:
            client.close()


@pytest.fixture
def shared_redis() -> Iterator[SharedRedis]:
    prefix = f"mh-rl-{os.getpid()}-{next(_counter)}:"
    with redis_keys(prefix) as (url, _):
        yield SharedRedis(url, prefix)


MakeReceiver = Callable[..., Flask]


@pytest.fixture
def make_receiver(
    settings: Settings, session_factory: sessionmaker[Session], shared_redis: SharedRedis
) -> MakeReceiver:
    """A receiver process of the deployment: same database, same Redis broker and prefix."""

    def make(**changes: object) -> Flask:
        deployed = settings.model_copy(
            update={
                "broker_url": shared_redis.url,  # the counters' default home: a Redis broker
                "broker_key_prefix": shared_redis.prefix,
                **changes,
            }
        )
        app = create_app(deployed, session_factory=session_factory, enqueue=Enqueued(calls=[]))
        app.testing = True
        return app

    return make


def get_user(client: FlaskClient, token: str) -> int:
    return client.get("/v1/user", headers={"Authorization": f"Bearer {token}"}).status_code


def post_event(client: FlaskClient) -> int:
    msg_id, at = new_msg_id(), dt.datetime.now(dt.UTC)
    body = event_body(424242, at=at)  # a meeting we do not know: stored, never delivered
    return client.post(
        "/v1/events", data=body, headers=signed_headers(msg_id, body, at)
    ).status_code


def test_receivers_share_each_tokens_counter(
    make_receiver: MakeReceiver, make_account: Callable[..., Account]
) -> None:
    alice, bob = make_account(), make_account()
    first = make_receiver(rate_limit_api="4/hour").test_client()
    second = make_receiver(rate_limit_api="4/hour").test_client()

    served = [get_user(receiver, alice.token) for receiver in (first, second, first, second)]

    assert served == [200] * 4
    assert get_user(first, alice.token) == 429
    refused = second.get("/v1/user", headers=alice.headers)
    assert refused.status_code == 429
    assert refused.get_json()["code"] == "rate-limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert [get_user(first, bob.token), get_user(second, bob.token)] == [200, 200]


def test_receivers_share_the_ingest_counter_apart_from_the_api(
    make_receiver: MakeReceiver, account: Account
) -> None:
    first = make_receiver(rate_limit_ingest="2/hour", rate_limit_api="2/hour").test_client()
    second = make_receiver(rate_limit_ingest="2/hour", rate_limit_api="2/hour").test_client()

    assert [post_event(first), post_event(second)] == [202, 202]
    assert [post_event(first), post_event(second)] == [429, 429]
    assert [get_user(first, account.token), get_user(second, account.token)] == [200, 200]
    assert get_user(first, account.token) == 429


def test_counters_live_under_the_prefix_expire_and_never_name_the_token(
    make_receiver: MakeReceiver, shared_redis: SharedRedis, account: Account
) -> None:
    client = make_receiver(rate_limit_api="5/hour").test_client()

    assert get_user(client, account.token) == 200
    assert post_event(client) == 202

    keys = shared_redis.counter_keys()
    assert len(keys) == 2, keys
    assert all(key.startswith(shared_redis.prefix) for key in keys)
    assert not [key for key in keys if account.token in key]
    assert [key for key in keys if hash_token(account.token) in key]
    assert all(0 < shared_redis.ttl(key) <= 3600 for key in keys)


def test_an_explicit_storage_url_wins_over_the_broker(
    make_receiver: MakeReceiver, shared_redis: SharedRedis, account: Account
) -> None:
    first = make_receiver(
        broker_url="amqp://guest:guest@127.0.0.1:1//",  # never reached: enqueue is ours
        rate_limit_storage_url=shared_redis.url,
        rate_limit_api="2/hour",
    ).test_client()
    second = make_receiver(rate_limit_api="2/hour").test_client()

    assert [get_user(first, account.token), get_user(second, account.token)] == [200, 200]
    assert get_user(first, account.token) == 429


def test_an_outage_leaves_the_api_served_and_limited_then_counters_are_shared_again(
    make_receiver: MakeReceiver,
    shared_redis: SharedRedis,
    make_account: Callable[..., Account],
) -> None:
    parts = urlsplit(shared_redis.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    try:
        behind_proxy = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        cut_off = make_receiver(
            rate_limit_storage_url=behind_proxy, rate_limit_api="2/hour"
        ).test_client()
        direct = make_receiver(rate_limit_api="2/hour").test_client()
        alice, bob = make_account(), make_account()
        proxy.pause()

        during = [get_user(cut_off, alice.token) for _ in range(2)]

        assert during == [200, 200]  # Redis unreachable: the API stays up ...
        assert get_user(cut_off, alice.token) == 429  # ... and limited by this process alone
        assert shared_redis.counter_keys() == []
        proxy.resume()

        def counts_in_redis_again() -> bool:
            get_user(cut_off, bob.token)
            return any(hash_token(bob.token) in key for key in shared_redis.counter_keys())

        # flask-limiter looks for its storage again 1, 2, 4 ... 32 s apart.
        wait_until(counts_in_redis_again, 90, "the receiver to count in Redis again", every=0.5)
        # Bob's one Redis-counted request is seen by the other receiver.
        assert get_user(direct, bob.token) == 200
        assert get_user(cut_off, bob.token) == 429
        assert get_user(direct, bob.token) == 429
    finally:
        proxy.close()
