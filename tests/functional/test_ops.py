from __future__ import annotations

from flask.testing import FlaskClient


def test_healthz_answers_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    response = client.get("/no/such/path")
    assert response.status_code == 404
    body = response.get_json()
    assert body["code"] == "not-found"
    assert body["Message"]
    assert body["errors"] == []


def test_wrong_method_is_json_405_with_allow(client: FlaskClient) -> None:
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert response.get_json()["code"] == "method-not-allowed"
    assert "GET" in response.headers["Allow"]


def test_metrics_are_prometheus_text(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert b"python_info" in response.data or b"process_" in response.data
