"""Alert rules and the alerts they fired (SPEC 7).

Every endpoint needs the `start_meeting` scope, as the webhooks API does: a rule watches the
meetings and callbacks that start calls made, and its alerts are signed like those callbacks.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from core.alert_schemas import (
    AlertList,
    AlertOut,
    AlertQuery,
    AlertRuleIn,
    AlertRuleList,
    AlertRuleOut,
    parse_rule,
)
from core.services import alerts
from core.validation import validate
from receiver import get_settings
from receiver.auth import current_user
from receiver.bodies import read_object
from receiver.db import get_session
from receiver.openapi import operation

bp = Blueprint("alerts", __name__, url_prefix="/v1/alerts")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


@bp.post("/rules")
@operation({201: (AlertRuleOut, "The rule.")}, scope="start_meeting", json=AlertRuleIn)
def create_rule() -> Response:
    """Create an alert rule: 201 with the rule."""
    settings = get_settings()
    body, params = parse_rule(
        read_object(),
        allowed_networks=settings.callback_allowed_networks,
        max_failing_attempts=len(settings.retry_schedule) + 1,
    )
    session = get_session()
    rule = alerts.create_rule(
        session,
        current_user().id,
        type=body.type,
        params=params.model_dump(),
        callback_url=body.callbackUrl,
    )
    session.commit()
    return _json(AlertRuleOut.of(rule).render(), 201)


@bp.get("/rules")
@operation({200: (AlertRuleList, "The live rules, oldest first.")}, scope="start_meeting")
def list_rules() -> Response:
    """List the user's live alert rules, oldest first."""
    rules = alerts.list_rules(get_session(), current_user().id)
    return _json(AlertRuleList(rules=[AlertRuleOut.of(rule) for rule in rules]).render())


@bp.get("/rules/<int:rule_id>")
@operation({200: (AlertRuleOut, "The rule.")}, scope="start_meeting", errors=(404,))
def get_rule(rule_id: int) -> Response:
    """Show one live alert rule."""
    rule = alerts.get_rule(get_session(), current_user().id, rule_id)
    return _json(AlertRuleOut.of(rule).render())


@bp.delete("/rules/<int:rule_id>")
@operation({204: (None, "Deleted.")}, scope="start_meeting", errors=(404,))
def delete_rule(rule_id: int) -> Response:
    """Stop a rule firing: 204. The alerts it fired stay listed."""
    session = get_session()
    alerts.delete_rule(session, current_user().id, rule_id)
    session.commit()
    return Response(status=204)


@bp.get("")
@operation(
    {200: (AlertList, "One page of alerts, newest first.")},
    scope="start_meeting",
    query=AlertQuery,
)
def list_alerts() -> Response:
    """List the user's fired alerts, newest first, one page at a time."""
    # An empty parameter (`?cursor=`, as a form leaves it) is no parameter.
    query = validate(AlertQuery, {k: v for k, v in request.args.items() if v != ""})
    page = alerts.list_alerts(
        get_session(), current_user().id, limit=query.limit, cursor=query.cursor
    )
    body = AlertList(
        alerts=[AlertOut.of(alert, delivery) for alert, delivery in page.items],
        nextCursor=page.next_cursor,
    )
    return _json(body.render())
