"""The OpenAPI 3.1 description served at /openapi.json."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from receiver import get_settings

bp = Blueprint("openapi", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _op(
    summary: str,
    ok: int,
    *,
    scope: str | None = None,
    body: bool = False,
    form: bool = False,
    errors: tuple[int, ...] = (),
    params: tuple[dict[str, Any], ...] = (),
    also_ok: dict[int, str] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok): {"description": "success"}}
    for code, description in (also_ok or {}).items():
        responses[str(code)] = {"description": description}
    # Every authenticated call reads the database: 503 with Retry-After when it is down.
    codes = (
        set(errors) | ({401, 403, 503} if scope else set()) | ({400, 413, 415} if body else set())
    )
    for code in sorted(codes):
        responses[str(code)] = {
            "description": "error",
            "content": {"application/json": {"schema": ERROR}},
        }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if scope:
        op["security"] = BEARER
        op["x-scope"] = scope
    if body:
        content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
        if form:
            content["application/x-www-form-urlencoded"] = {"schema": {"type": "object"}}
        op["requestBody"] = {"content": content}
    if params:
        op["parameters"] = list(params)
    return op


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def document() -> dict[str, Any]:
    """Return the OpenAPI document of the receiver."""
    meeting_id = _path_id("meetingId")
    rule_id = _path_id("ruleId")
    iso = {"type": "string", "format": "date-time"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "meetinghooks", "version": "1"},
        "servers": [{"url": get_settings().base_url}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["Message", "code", "errors"],
                    "properties": {
                        "Message": {"type": "string"},
                        "code": {"type": "string"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "field": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            },
        },
        "paths": {
            "/v1/meetings/start": {
                "post": _op(
                    "Start an ad hoc meeting", 201, scope="start_meeting", body=True, form=True
                )
            },
            "/v1/meetings/{meetingId}/start": {
                "post": _op(
                    "Start a scheduled meeting",
                    200,
                    scope="start_meeting",
                    body=True,
                    form=True,
                    errors=(404, 409),
                    params=(meeting_id,),
                )
            },
            "/v1/meetings/{meetingId}/end": {
                "post": _op(
                    "End a meeting (ending twice is harmless)",
                    200,
                    scope="start_meeting",
                    errors=(404,),
                    params=(meeting_id,),
                )
            },
            "/v1/meetings": {
                "get": _op(
                    "List upcoming scheduled meetings",
                    200,
                    scope="scheduler",
                    params=(_query("endDate", iso),),
                ),
                "post": _op("Schedule a meeting", 201, scope="scheduler", body=True),
            },
            "/v1/meetings/{meetingId}": {
                "get": _op(
                    "Read a meeting", 200, scope="scheduler", errors=(404,), params=(meeting_id,)
                ),
                "patch": _op(
                    "Change a scheduled meeting",
                    200,
                    scope="scheduler",
                    body=True,
                    errors=(404, 409),
                    params=(meeting_id,),
                ),
                "delete": _op(
                    "Delete a meeting", 204, scope="scheduler", errors=(404,), params=(meeting_id,)
                ),
            },
            "/v1/user": {"get": _op("Read the current user", 200, scope="user_info")},
            "/v1/events": {
                "post": _op(
                    "Report a lifecycle event (Standard Webhooks signed)",
                    202,
                    body=True,
                    errors=(401, 503),
                    also_ok={200: "the same webhook-id again: already recorded"},
                )
            },
            "/v1/webhooks/deliveries": {
                "get": _op(
                    "List callback deliveries, newest first",
                    200,
                    scope="start_meeting",
                    errors=(400,),
                    params=(
                        _query("meetingId", {"type": "integer"}),
                        _query("status", {"enum": ["pending", "succeeded", "failed"]}),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                        _query("cursor", {"type": "string"}),
                    ),
                )
            },
            "/v1/webhooks/deliveries/{deliveryId}": {
                "get": _op(
                    "Read one delivery with its attempts",
                    200,
                    scope="start_meeting",
                    errors=(404,),
                    params=(_path_id("deliveryId"),),
                )
            },
            "/v1/webhooks/deliveries/{deliveryId}/redeliver": {
                "post": _op(
                    "Send a delivery again with the same webhook-id",
                    202,
                    scope="start_meeting",
                    errors=(404, 409),
                    params=(_path_id("deliveryId"),),
                )
            },
            "/v1/webhooks/signing-secret": {
                "get": _op("Read the callback signing secret", 200, scope="start_meeting")
            },
            "/v1/webhooks/signing-secret/rotate": {
                "post": _op("Rotate the signing secret (24 h overlap)", 200, scope="start_meeting")
            },
            "/v1/meetings/{meetingId}/events": {
                "get": _op(
                    "A meeting's events in event-time order, each with its callbacks",
                    200,
                    scope="start_meeting",
                    errors=(404,),
                    params=(meeting_id,),
                )
            },
            "/v1/alerts/rules": {
                "post": _op("Create an alert rule", 201, scope="start_meeting", body=True),
                "get": _op("List the alert rules", 200, scope="start_meeting"),
            },
            "/v1/alerts/rules/{ruleId}": {
                "get": _op(
                    "Read an alert rule",
                    200,
                    scope="start_meeting",
                    errors=(404,),
                    params=(rule_id,),
                ),
                "delete": _op(
                    "Delete an alert rule (its alerts stay listed)",
                    204,
                    scope="start_meeting",
                    errors=(404,),
                    params=(rule_id,),
                ),
            },
            "/v1/alerts": {
                "get": _op(
                    "List fired alerts, newest first, with their delivery status",
                    200,
                    scope="start_meeting",
                    errors=(400,),
                    params=(
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                        _query("cursor", {"type": "string"}),
                    ),
                )
            },
            "/v1/analytics/summary": {
                "get": _op(
                    "Meetings, durations and deliveries in a time range",
                    200,
                    scope="user_info",
                    errors=(400,),
                    params=(_query("from", iso), _query("to", iso)),
                )
            },
            "/v1/analytics/timeseries": {
                "get": _op(
                    "Meetings started, ended and running at once, per hour or day",
                    200,
                    scope="user_info",
                    errors=(400,),
                    params=(
                        _query("from", iso),
                        _query("to", iso),
                        _query("interval", {"enum": ["hour", "day"]}),
                    ),
                )
            },
            "/presenter/{token}": {
                "get": _op("Presenter page (consumes nothing)", 200, errors=(410,)),
                "post": _op("Use the one-time presenter link", 200, errors=(410,)),
            },
            "/healthz": {"get": _op("Liveness", 200)},
            "/readyz": {"get": _op("Readiness: database and broker", 200, errors=(503,))},
            "/metrics": {"get": _op("Prometheus metrics", 200)},
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """Serve the OpenAPI document."""
    return jsonify(document())
