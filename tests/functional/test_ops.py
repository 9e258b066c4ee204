from __future__ import annotations

import re

from flask import Flask
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


def test_openapi_describes_the_api(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/meetings/start" in doc["paths"]
    assert doc["paths"]["/v1/events"]["post"]["responses"]["202"]
    assert doc["servers"] == [{"url": "https://meet.example.test"}]


def test_openapi_lists_what_each_endpoint_really_answers(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    ingest = paths["/v1/events"]["post"]
    assert {"200", "202", "400", "401", "413", "415", "503"} <= set(ingest["responses"])
    assert set(ingest["requestBody"]["content"]) == {"application/json"}
    start = paths["/v1/meetings/start"]["post"]
    assert "application/x-www-form-urlencoded" in start["requestBody"]["content"]
    assert {"401", "403", "503"} <= set(paths["/v1/user"]["get"]["responses"])
    assert "409" not in paths["/v1/meetings/{meetingId}/end"]["post"]["responses"]


def test_openapi_lists_every_served_api_route(app: Flask, client: FlaskClient) -> None:
    documented = set(client.get("/openapi.json").get_json()["paths"])
    served = {
        re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + _camel(m.group(1)) + "}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
    }
    assert served <= documented, f"undocumented: {sorted(served - documented)}"
    assert {path for path in documented if path.startswith("/v1/")} <= served


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
