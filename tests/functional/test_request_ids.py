from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.conftest import Account


def test_a_sane_request_id_is_echoed(client: FlaskClient, account: Account) -> None:
    response = client.get("/v1/user", headers={**account.headers, "X-Request-Id": "abc-123"})
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == "abc-123"


@pytest.mark.parametrize("given", ["x" * 129, "two words", "<script>", "ünïcode"])
def test_an_unsafe_request_id_is_replaced_by_a_new_one(client: FlaskClient, given: str) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": given})
    made = response.headers["X-Request-Id"]
    assert made != given
    assert len(made) == 32
    assert made.isalnum()


def test_every_response_has_one_errors_included(client: FlaskClient) -> None:
    ids = {
        client.get("/healthz").headers["X-Request-Id"],
        client.get("/no-such-page").headers["X-Request-Id"],
        client.get("/v1/user").headers["X-Request-Id"],  # 401
    }
    assert len(ids) == 3
    assert "" not in ids
