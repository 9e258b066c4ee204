from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from flask.testing import FlaskClient
from schemathesis.specs.openapi import definitions as openapi_definitions

from core import ssrf
from core.responses import ErrorOut
from receiver import openapi
from tests.conftest import Account
from tests.platform_events import new_msg_id, signed_event, signed_headers

# Routes left out of the document on purpose: the document itself and its Swagger UI page and
# assets, Prometheus' text format, and the HTML pages people open from links.
UNDOCUMENTED = {
    "static",
    "openapi.openapi",
    "openapi.docs",
    "openapi.static",
    "ops.metrics",
    "pages.audio_numbers",
    "pages.viewer",
}
# The console's HTML pages are for people signed in with a cookie, not part of the API.
UNDOCUMENTED_BLUEPRINTS = {"console"}
IGNORED_METHODS = {"HEAD", "OPTIONS"}
ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
PUBLIC = "93.184.216.34"
HOOK = f"https://{PUBLIC}/hook"


@pytest.fixture
def doc(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """Validate against `schema`, its $refs resolved in the document's components."""
    return jsonschema_rs.validator_for(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **schema,
            "components": doc["components"],
        },
        validate_formats=True,
    )


def template(rule: str) -> str:
    """Turn a Flask rule into an OpenAPI path: /a/<int:meeting_id> -> /a/{meetingId}."""

    def camel(match: re.Match[str]) -> str:
        head, *rest = match.group(1).split("_")
        return "{" + head + "".join(part.title() for part in rest) + "}"

    return re.sub(r"<(?:\w+:)?(\w+)>", camel, rule)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


class TestDocument:
    def test_is_openapi_3_1_for_this_deployment(self, doc: dict[str, Any]) -> None:
        assert doc["openapi"].startswith("3.1.")
        assert doc["servers"] == [{"url": "https://meet.example.test"}]
        assert doc["info"]["title"] == "meetinghooks"

    def test_is_valid_against_the_openapi_3_1_schema(self, doc: dict[str, Any]) -> None:
        # The OpenAPI Initiative's schema of 3.1 documents, as schemathesis bundles it.
        check = openapi_definitions.OPENAPI_31_VALIDATOR
        assert [error.message for error in check.iter_errors(doc)] == []

    def test_every_route_is_documented_and_every_operation_is_served(
        self, app: Flask, doc: dict[str, Any]
    ) -> None:
        served = {
            (template(rule.rule), method.lower()): rule.endpoint
            for rule in app.url_map.iter_rules()
            if rule.endpoint not in UNDOCUMENTED
            and rule.endpoint.partition(".")[0] not in UNDOCUMENTED_BLUEPRINTS
            for method in rule.methods - IGNORED_METHODS
        }
        documented = {(path, method): op["operationId"] for path, method, op in operations(doc)}
        assert served == documented
        assert len(documented) >= 27  # the whole API: /v1, the presenter link, health

    def test_path_parameters_are_declared_as_the_url_map_converts_them(
        self, app: Flask, doc: dict[str, Any]
    ) -> None:
        converters = {template(rule.rule): rule._converters for rule in app.url_map.iter_rules()}
        checked = 0
        for path, _method, op in operations(doc):
            in_path = set(re.findall(r"\{(\w+)\}", path))
            declared = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
            assert set(declared) == in_path, path
            for name, parameter in declared.items():
                assert parameter["required"] is True
                converter = type(next(iter(converters[path].values()))).__name__
                expected = "integer" if converter == "IntegerConverter" else "string"
                assert parameter["schema"]["type"] == expected, (path, name)
                checked += 1
        assert checked >= 10

    def test_every_example_validates_against_its_own_schema(self, doc: dict[str, Any]) -> None:
        checked = 0
        for schema in _schemas_with_examples(doc["components"]["schemas"]):
            check = validator(doc, {k: v for k, v in schema.items() if k != "examples"})
            for example in schema["examples"]:
                errors = [error.message for error in check.iter_errors(example)]
                assert not errors, (example, errors)
                checked += 1
        assert checked >= 8

    def test_every_request_example_is_accepted(
        self,
        client: FlaskClient,
        doc: dict[str, Any],
        account: Account,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # The examples name real-looking hosts: a public address, without asking DNS.
        monkeypatch.setattr(ssrf, "resolve", lambda _host, _port: [ipaddress.ip_address(PUBLIC)])
        meeting = client.post(
            "/v1/meetings",
            json={
                "meetingName": "Target",
                "meetingStart": "2099-01-01T09:00:00Z",
                "meetingEnd": "2099-01-01T10:00:00Z",
            },
            headers=account.headers,
        ).get_json()["meetingId"]
        accepted = 0
        for path, method, op in operations(doc):
            media = op.get("requestBody", {}).get("content", {}).get("application/json")
            if media is None:
                continue
            name = media["schema"]["$ref"].rsplit("/", 1)[-1]
            for example in doc["components"]["schemas"][name].get("examples", []):
                url = path.replace("{meetingId}", str(meeting))
                body = json.dumps(example)
                headers = dict(account.headers)
                if path == "/v1/events":
                    headers = signed_headers(new_msg_id(), body, dt.datetime.now(dt.UTC))
                response = client.open(
                    url,
                    method=method.upper(),
                    data=body,
                    content_type="application/json",
                    headers=headers,
                )
                assert response.status_code < 300, (path, example, response.get_json())
                accepted += 1
        assert accepted >= 6

    def test_no_error_is_documented_in_spectrees_own_shape(self, doc: dict[str, Any]) -> None:
        for path, method, op in operations(doc):
            # 422 only where the operation answers it itself, in the one error shape: a
            # reused Idempotency-Key (the IETF draft's status), never spectree's.
            if "422" in op["responses"]:
                content = op["responses"]["422"]["content"]["application/json"]
                assert (path, content["schema"]) == (
                    "/v1/webhooks/deliveries/replay",
                    ERROR_REF,
                ), (path, method)
        assert not any("ValidationError" in name for name in doc["components"]["schemas"])

    def test_every_error_refers_to_the_one_error_schema(self, doc: dict[str, Any]) -> None:
        for path, _method, op in operations(doc):
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    content = response["content"]
                    assert content["application/json"]["schema"] == ERROR_REF, (path, status)

    def test_api_operations_document_their_scope_limits_and_outages(
        self, doc: dict[str, Any]
    ) -> None:
        for path, method, op in operations(doc):
            if not path.startswith("/v1/"):
                continue
            responses = op["responses"]
            for status in ("429", "503"):
                assert responses[status]["headers"]["Retry-After"]["schema"]["type"] == "integer"
            if path == "/v1/events":
                assert op["security"] == [
                    {"webhookId": [], "webhookTimestamp": [], "webhookSignature": []}
                ]
                assert {"400", "401", "413", "415"} <= set(responses)
                continue
            assert {"401", "403"} <= set(responses), (path, method)
            assert "WWW-Authenticate" in responses["401"]["headers"]
            ((scheme, scopes),) = op["security"][0].items()
            assert scheme == "bearer"
            assert scopes in (["start_meeting"], ["scheduler"], ["user_info"]), (path, method)

    def test_security_schemes(self, doc: dict[str, Any]) -> None:
        schemes = doc["components"]["securitySchemes"]
        assert schemes["bearer"]["type"] == "http"
        assert schemes["bearer"]["scheme"] == "bearer"
        headers = {
            schemes[name]["name"] for name in ("webhookId", "webhookTimestamp", "webhookSignature")
        }
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert all(
            schemes[name]["in"] == "header"
            for name in ("webhookId", "webhookTimestamp", "webhookSignature")
        )

    def test_what_each_endpoint_really_answers(self, doc: dict[str, Any]) -> None:
        paths = doc["paths"]
        ingest = paths["/v1/events"]["post"]
        assert {"200", "202"} <= set(ingest["responses"])
        assert set(ingest["requestBody"]["content"]) == {"application/json"}
        start = paths["/v1/meetings/start"]["post"]["requestBody"]
        assert set(start["content"]) == {
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        }
        assert start["required"] is True
        # The body of a scheduled start may be absent (SPEC 4).
        assert paths["/v1/meetings/{meetingId}/start"]["post"]["requestBody"]["required"] is False
        assert set(paths["/v1/meetings"]["post"]["requestBody"]["content"]) == {"application/json"}
        assert "409" not in paths["/v1/meetings/{meetingId}/end"]["post"]["responses"]
        assert "410" in paths["/presenter/{token}"]["post"]["responses"]
        assert "204" in paths["/v1/meetings/{meetingId}"]["delete"]["responses"]
        assert "content" not in paths["/v1/meetings/{meetingId}"]["delete"]["responses"]["204"]

    def test_request_schemas_are_precise(self, doc: dict[str, Any]) -> None:
        schemas = doc["components"]["schemas"]
        start = schemas["AdHocStart"]
        assert start["required"] == ["startWithPersonalUrl"]
        assert start["properties"]["viewerMode"]["anyOf"][0]["enum"] == ["default", "headless"]
        meeting = schemas["ScheduledMeetingIn"]["properties"]
        assert meeting["meetingName"]["maxLength"] == 200
        assert meeting["meetingStart"]["format"] == "date-time"
        assert meeting["participants"]["maxItems"] == 500
        assert meeting["participants"]["items"]["maxLength"] == 254
        limit = _parameter(doc, "/v1/webhooks/deliveries", "get", "limit")
        assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
        assert _parameter(doc, "/v1/analytics/timeseries", "get", "interval")["schema"]["enum"] == [
            "hour",
            "day",
        ]
        # 7 attempts in the test settings' retry schedule: 8 attempts, the 8th is delivery.failed.
        (failing,) = [
            case["then"]["properties"]["params"]
            for case in schemas["AlertRuleIn"]["allOf"]
            if case["if"]["properties"]["type"]["const"] == "delivery.failing"
        ]
        assert failing["properties"]["attempts"]["maximum"] == 7

    def test_component_names_are_unique_per_model(self) -> None:
        class ErrorOut:  # another class with an existing component's name
            pass

        with pytest.raises(RuntimeError, match="two models are named ErrorOut"):
            openapi._component_name(ErrorOut)


def _parameter(doc: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    (found,) = [p for p in doc["paths"][path][method]["parameters"] if p["name"] == name]
    return found


def _schemas_with_examples(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("examples"), list):
            yield node
        for value in node.values():
            yield from _schemas_with_examples(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas_with_examples(value)


class TestResponsesMatchTheDocument:
    """A scripted flow: every main endpoint's answer validates against its documented schema."""

    def test_scripted_flow(
        self, client: FlaskClient, doc: dict[str, Any], account: Account
    ) -> None:
        check = ResponseChecker(client, doc, account)
        started = check(
            "post",
            "/v1/meetings/start",
            201,
            json={
                "startWithPersonalUrl": "false",
                "webhooks": {
                    "meeting.start": {"callbackUrl": HOOK},
                    "meeting.end": {"callbackUrl": HOOK, "customCallbackData": [1]},
                    "meeting.paused": {"callbackUrl": "ftp://x"},
                },
            },
        )
        meeting_id = started["meetingId"]
        link = started["presenterLink"].removeprefix("https://meet.example.test")
        check("post", link, 200, template_path="/presenter/{token}", accept_json=True)
        check("post", link, 410, template_path="/presenter/{token}", accept_json=True)
        check("post", "/v1/meetings/start", 201, form={"startWithPersonalUrl": "true"})
        scheduled = check(
            "post",
            "/v1/meetings",
            201,
            json={
                "meetingName": "Weekly sync",
                "meetingStart": "2099-12-07T09:00:00Z",
                "meetingEnd": "2099-12-07T10:30:00+01:00",
                "participants": ["bob@example.com"],
            },
        )
        other = scheduled["meetingId"]
        check("get", "/v1/meetings", 200, query={"endDate": "2100-01-01T00:00:00Z"})
        check("patch", f"/v1/meetings/{other}", 200, json={"meetingName": "Renamed"})
        check("post", f"/v1/meetings/{other}/start", 200)
        check("get", f"/v1/meetings/{meeting_id}", 200)
        check("post", f"/v1/meetings/{meeting_id}/end", 200)
        _, event, signed = signed_event(meeting_id, "meeting.end")
        check("post", "/v1/events", 202, data=event.encode(), headers=signed, auth=False)
        check("get", f"/v1/meetings/{meeting_id}/events", 200)
        check("delete", f"/v1/meetings/{other}", 204)
        check("get", "/v1/user", 200)
        page = check("get", "/v1/webhooks/deliveries", 200, query={"limit": "1"})
        assert page["deliveries"]
        assert page["nextCursor"]
        check("get", "/v1/webhooks/deliveries", 200, query={"cursor": page["nextCursor"]})
        delivery_id = page["deliveries"][0]["id"]
        check("get", f"/v1/webhooks/deliveries/{delivery_id}", 200)
        check("post", f"/v1/webhooks/deliveries/{delivery_id}/redeliver", 202)
        check("get", "/v1/webhooks/signing-secret", 200)
        check("post", "/v1/webhooks/signing-secret/rotate", 200)
        rule = check(
            "post",
            "/v1/alerts/rules",
            201,
            json={
                "type": "meeting.short",
                "params": {"seconds": 300},
                "callbackUrl": HOOK,
            },
        )
        check("get", "/v1/alerts/rules", 200)
        check("get", f"/v1/alerts/rules/{rule['id']}", 200)
        check("get", "/v1/alerts", 200)
        check("delete", f"/v1/alerts/rules/{rule['id']}", 204)
        check("get", "/v1/analytics/summary", 200)
        check("get", "/v1/analytics/timeseries", 200, query={"interval": "hour"})
        check("get", "/healthz", 200)
        assert check.checked >= 25

    def test_errors_are_in_the_documented_shape(
        self, client: FlaskClient, doc: dict[str, Any], account: Account
    ) -> None:
        check = ResponseChecker(client, doc, account)
        check("post", "/v1/meetings/start", 400, json={"startWithPersonalUrl": "maybe"})
        check("post", "/v1/meetings/start", 400, data=b"\xff{", content_type="application/json")
        check("post", "/v1/meetings/start", 415, data=b"x", content_type="text/plain")
        check("post", "/v1/meetings", 400, json={"meetingName": "", "meetingStart": "soon"})
        check("get", "/v1/meetings", 400, query={"endDate": "2026-01-01T00:00:00"})
        check("get", "/v1/meetings/999999", 404)
        check("get", "/v1/alerts", 400, query={"limit": "0"})
        check("get", "/v1/webhooks/deliveries", 400, query={"cursor": "nope"})
        check(
            "get",
            "/v1/analytics/summary",
            400,
            query={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        )
        check("get", "/v1/user", 401, auth=False)
        check("post", "/v1/events", 401, json={}, auth=False)
        check(
            "post", "/presenter/unknown", 410, template_path="/presenter/{token}", accept_json=True
        )
        assert check.checked == 12


class ResponseChecker:
    """Call the API and validate each answer against the document's schema for its status."""

    def __init__(self, client: FlaskClient, doc: dict[str, Any], account: Account) -> None:
        self.client = client
        self.doc = doc
        self.account = account
        self.checked = 0

    def __call__(
        self,
        method: str,
        path: str,
        status: int,
        *,
        template_path: str | None = None,
        query: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        auth: bool = True,
        accept_json: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Any:
        headers = {**(self.account.headers if auth else {}), **(headers or {})}
        if accept_json:
            headers["Accept"] = "application/json"
        response = self.client.open(
            path,
            method=method.upper(),
            query_string=query,
            json=json,
            data=form if form is not None else data,
            content_type=content_type,
            headers=headers,
        )
        assert response.status_code == status, response.get_data(as_text=True)
        documented = self.doc["paths"][template_path or _documented_path(self.doc, path)]
        answer = documented[method]["responses"][str(status)]
        self.checked += 1
        if "content" not in answer:
            assert response.get_data() == b""
            return None
        schema = answer["content"]["application/json"]["schema"]
        body = response.get_json()
        errors = [error.message for error in validator(self.doc, schema).iter_errors(body)]
        assert not errors, (method, path, body, errors)
        if status >= 400:
            ErrorOut.model_validate(body)
        return body


def _documented_path(doc: dict[str, Any], path: str) -> str:
    for documented in doc["paths"]:
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(documented)), path):
            return documented
    raise AssertionError(f"{path} is not documented")


class TestDocsPage:
    def test_renders_the_document_with_swagger_ui_from_the_package(
        self, client: FlaskClient
    ) -> None:
        response = client.get("/docs")
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert "SwaggerUIBundle" in html
        assert '"/openapi.json"' in html
        # No CDN, no external host: no absolute or protocol-relative URL at all.
        assert "//" not in html
        assert "http" not in html
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"} <= set(assets)
        for asset in assets:
            served = client.get(asset)
            assert served.status_code == 200, asset
            name = asset.removeprefix("/docs/static/")
            assert served.get_data() == (openapi.SWAGGER_UI_PY_ROOT / "static" / name).read_bytes()
            served.close()
