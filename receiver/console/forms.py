"""The console's forms and the query strings of its filters."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Optional

from core.alert_schemas import PARAMS
from core.models import AlertType
from receiver.console import bp

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict

# What each rule type watches, as the alert rule form offers it.
RULE_TYPES = {
    AlertType.MEETING_LONG_RUNNING: "a meeting runs longer than N minutes",
    AlertType.MEETING_NO_START: "a meeting's presenter link expires unused",
    AlertType.MEETING_SHORT: "a meeting ends in under N seconds",
    AlertType.DELIVERY_FAILED: "a callback fails for good",
    AlertType.DELIVERY_FAILING: "a callback fails N attempts in a row",
    AlertType.WEBHOOK_DISABLED: "a callback answers 410 and is disabled",
    AlertType.WEBHOOK_RECOVERED: "a failing callback succeeds again",
}


class SignInForm(FlaskForm):
    """Sign in with an access token; `next` is where to go afterwards."""

    token = PasswordField("Access token", validators=[DataRequired()])
    next = HiddenField()


class ActionForm(FlaskForm):
    """A button that changes something: carries only the CSRF token and where to return."""

    next = HiddenField()


class AlertRuleForm(FlaskForm):
    """A new alert rule; the number fields are read only for the types that take them."""

    type = SelectField(
        "When",
        choices=[SelectChoice(str(kind), f"{kind}: {text}") for kind, text in RULE_TYPES.items()],
    )
    minutes = IntegerField("Minutes (meeting.long_running)", validators=[Optional()])
    seconds = IntegerField("Seconds (meeting.short)", validators=[Optional()])
    attempts = IntegerField("Attempts (delivery.failing)", validators=[Optional()])
    callback_url = StringField("Send alerts to (URL)", validators=[DataRequired()])

    def rule_body(self) -> dict[str, Any]:
        """Return the body the API's POST /v1/alerts/rules would take for this form."""
        params: dict[str, Any] = {}
        kind = AlertType(self.type.data)
        for name in PARAMS[kind].model_fields:
            value = self[name].data
            params[name] = value
        return {"type": kind.value, "params": params, "callbackUrl": self.callback_url.data}


def safe_next(target: str | None, default: str) -> str:
    """Return `target` if it is a console path of this site, else `default` (no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    prefix = bp.url_prefix or "/console"
    if parts.scheme or parts.netloc or not target.startswith(prefix) or "\\" in target:
        return default
    return target


class BadFilter(ValueError):
    """A filter value the console cannot read; the message names the field."""


def utc_input(args: MultiDict[str, str], name: str) -> dt.datetime | None:
    """Read a `datetime-local` input as UTC (the console shows every time in UTC)."""
    value = args.get(name, "").strip()
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"{name}: not a date and time such as 2026-12-05T10:00") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
