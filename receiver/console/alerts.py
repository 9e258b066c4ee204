"""Alert rules (create, delete) and the alerts they fired, with their delivery status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, flash, redirect, request, url_for

from core.alert_schemas import AlertQuery, parse_rule
from core.errors import ValidationFailed
from core.services import alerts as alert_service
from core.validation import validate
from receiver import get_settings
from receiver.console import bp
from receiver.console.forms import ActionForm, AlertRuleForm
from receiver.console.guard import person, signed_in
from receiver.console.render import page
from receiver.db import get_session

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

# Alert rules are the start_meeting scope's, as every /v1/alerts endpoint is.
SCOPE = "start_meeting"


def _alerts_page(
    form: AlertRuleForm, status: int = 200, problems: list[str] | None = None
) -> Response:
    session = get_session()
    user_id = person().id
    query = validate(
        AlertQuery, {k: v for k, v in request.args.items() if v != "" and k == "cursor"}
    )
    fired = alert_service.list_alerts(session, user_id, cursor=query.cursor)
    return page(
        "console/alerts.html",
        status,
        title="Alerts",
        rules=alert_service.list_rules(session, user_id),
        fired=fired.items,
        next_page=url_for("console.alerts", cursor=fired.next_cursor)
        if fired.next_cursor
        else None,
        form=form,
        problems=problems or [],
        action=ActionForm(),
    )


@bp.get("/alerts")
@signed_in(SCOPE)
def alerts() -> Response:
    """Show the rules, the form for a new one, and the fired alerts, newest first."""
    return _alerts_page(AlertRuleForm(formdata=None))


@bp.post("/alerts/rules")
@signed_in(SCOPE)
def create_rule() -> Response | BaseResponse:
    """Create a rule, validated exactly as POST /v1/alerts/rules validates it."""
    form = AlertRuleForm()
    if not form.validate():
        problems = [
            f"{form[name].label.text}: {' '.join(errors)}" for name, errors in form.errors.items()
        ]
        return _alerts_page(form, 400, problems)
    settings = get_settings()
    try:
        body, params = parse_rule(
            form.rule_body(),
            allowed_networks=settings.callback_allowed_networks,
            max_failing_attempts=len(settings.retry_schedule) + 1,
        )
    except ValidationFailed as bad:
        return _alerts_page(form, 400, [f"{e['field']}: {e['message']}" for e in bad.errors])
    session = get_session()
    rule = alert_service.create_rule(
        session,
        person().id,
        type=body.type,
        params=params.model_dump(),
        callback_url=body.callbackUrl,
    )
    session.commit()
    flash(f"Alert rule {rule.id} ({rule.type}) created.", "info")
    return redirect(url_for("console.alerts"))


@bp.post("/alerts/rules/<int:rule_id>/delete")
@signed_in(SCOPE)
def delete_rule(rule_id: int) -> BaseResponse:
    """Stop a rule firing; the alerts it fired stay listed."""
    session = get_session()
    alert_service.delete_rule(session, person().id, rule_id)
    session.commit()
    flash(f"Alert rule {rule_id} deleted.", "info")
    return redirect(url_for("console.alerts"))
