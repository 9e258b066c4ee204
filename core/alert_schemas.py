"""Request and response shapes of the alerting API (SPEC 7), validated with pydantic.

Kept beside `core/schemas.py` (the meetings API's shapes) in a module of their own. A rule's
`params` are checked against its `type`: each type has its own strict model, so an unknown
key, a missing or out-of-range number or a number sent as a string is a 400 naming
`params.<key>`.
"""

# Field names are the API's camelCase wire names (as core/schemas.py, ignored there in pyproject).
# ruff: noqa: N815

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core import ssrf
from core.errors import FieldError, ValidationFailed
from core.models import AlertType
from core.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Cursor
from core.responses import Response, Time

if TYPE_CHECKING:
    from core.models import Alert, AlertRule, Delivery

# Sane upper bounds: beyond them a rule watches for something no on-call person means.
MAX_MINUTES = 7 * 24 * 60  # a meeting running for a week
MAX_SECONDS = 24 * 60 * 60  # "short" means under a day at most
MAX_ATTEMPTS = 100  # above any retry schedule worth having; the schedule bounds it further

StrictCount = Annotated[int, Field(strict=True, ge=1)]


class Params(BaseModel):
    """Base of a rule's params: every key is known, nothing else is accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """`{}`: the rule type takes no parameters."""


class MinutesParams(Params):
    """`meeting.long_running`: started and not ended after this many minutes."""

    minutes: Annotated[StrictCount, Field(le=MAX_MINUTES)]


class SecondsParams(Params):
    """`meeting.short`: ended in under this many seconds."""

    seconds: Annotated[StrictCount, Field(le=MAX_SECONDS)]


class AttemptsParams(Params):
    """`delivery.failing`: this many consecutive failed attempts of one delivery."""

    attempts: Annotated[StrictCount, Field(le=MAX_ATTEMPTS)]


PARAMS: dict[AlertType, type[Params]] = {
    AlertType.MEETING_LONG_RUNNING: MinutesParams,
    AlertType.MEETING_NO_START: NoParams,
    AlertType.MEETING_SHORT: SecondsParams,
    AlertType.DELIVERY_FAILED: NoParams,
    AlertType.DELIVERY_FAILING: AttemptsParams,
    AlertType.WEBHOOK_DISABLED: NoParams,
    AlertType.WEBHOOK_RECOVERED: NoParams,
}


def _rule_schema(schema: dict[str, Any]) -> None:
    """Add to a rule's JSON schema the params each type takes, as `parse_rule` checks them."""
    schema["examples"] = [
        {
            "type": "meeting.short",
            "params": {"seconds": 300},
            "callbackUrl": "https://hooks.example.com/alerts",
        }
    ]
    schema["allOf"] = [
        {
            "if": {"properties": {"type": {"const": rule_type.value}}, "required": ["type"]},
            "then": {
                "properties": {"params": model.model_json_schema()},
                # Absent params are `{}`: fine for a type that takes none.
                **({"required": ["params"]} if model.model_fields else {}),
            },
        }
        for rule_type, model in PARAMS.items()
    ]


# What `ssrf.parse_callback_url` accepts before it looks at the address: an absolute http(s)
# URL with a host, no credentials, spaces, backslashes or control characters.
CALLBACK_URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f\\@/?#]+([/?#][^\x00-\x20\x7f\\]*)?$"
)


class AlertRuleIn(BaseModel):
    """POST /v1/alerts/rules; unknown top-level fields are ignored (SPEC 3), unknown params not."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        json_schema_extra=lambda schema, _model: _rule_schema(schema),
    )

    type: AlertType
    # Absent params mean `{}`: right for the types that take none, a 400 for the others.
    params: dict[str, Any] = Field(
        default={}, description="The rule type's parameters; a type that takes none takes `{}`."
    )
    callbackUrl: Annotated[
        str,
        Field(
            min_length=1,
            max_length=ssrf.MAX_URL_LENGTH,
            description=(
                "http or https; refused (400) when it names or resolves to a private or "
                "reserved address outside CALLBACK_ALLOWED_NETWORKS."
            ),
            # Not `format: uri`: the guard reads more than RFC 3986 allows (non-ASCII paths).
            json_schema_extra={"pattern": CALLBACK_URL_PATTERN},
        ),
    ]


_TYPE_ONLY = TypeAdapter(AlertType)


def parse_rule(
    data: dict[str, Any], *, allowed_networks: Any = (), max_failing_attempts: int | None = None
) -> tuple[AlertRuleIn, Params]:
    """Validate a rule body; raise ValidationFailed naming every bad field at once.

    `max_failing_attempts` is the number of attempts before the retry schedule is spent: a
    `delivery.failing` rule at or past it could never fire (that failure is `delivery.failed`).
    """
    errors: list[FieldError] = []
    rule: AlertRuleIn | None = None
    try:
        rule = AlertRuleIn.model_validate(data)
    except ValidationError as exc:
        errors += _errors(exc)
    rule_type = _known_type(data.get("type"))
    params: Params | None = None
    raw_params = data.get("params", {})
    if rule_type is not None and isinstance(raw_params, dict):
        try:
            params = PARAMS[rule_type].model_validate(raw_params)
        except ValidationError as exc:
            errors += _errors(exc, prefix="params")
    if (
        isinstance(params, AttemptsParams)
        and max_failing_attempts is not None
        and params.attempts >= max_failing_attempts
    ):
        errors.append(
            {
                "field": "params.attempts",
                "message": f"must be below {max_failing_attempts}: the retry schedule makes "
                f"{max_failing_attempts} attempts, and the last failure is delivery.failed",
            }
        )
    code = None
    url = data.get("callbackUrl")
    if isinstance(url, str) and 1 <= len(url) <= ssrf.MAX_URL_LENGTH:
        try:
            ssrf.check_callback_url(url, allowed_networks)
        except ssrf.CallbackUrlRefused as refused:
            errors.append({"field": "callbackUrl", "message": refused.message})
            code = refused.code
    if errors or rule is None or params is None:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        # A refused URL alone keeps the code webhook registration reports for it.
        only_url = all(e["field"] == "callbackUrl" for e in errors)
        raise ValidationFailed(
            f"invalid alert rule: {summary}",
            code=code if code and only_url else None,
            errors=errors,
        )
    return rule, params


def _known_type(value: Any) -> AlertType | None:
    try:
        return _TYPE_ONLY.validate_python(value)
    except ValidationError:
        return None


def _errors(exc: ValidationError, *, prefix: str | None = None) -> list[FieldError]:
    found: list[FieldError] = []
    for err in exc.errors():
        parts = [prefix] if prefix else []
        parts += [str(part) for part in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "is not a parameter of this rule type"
        found.append({"field": ".".join(parts) or "body", "message": message})
    return found


# --- responses ------------------------------------------------------------------------------


class AlertRuleOut(Response):
    """One alert rule as the API shows it."""

    id: int
    type: str = Field(description="What the rule watches: one of SPEC 7's rule types.")
    params: dict[str, Any]
    callbackUrl: str = Field(description="Where its alerts are POSTed, signed like callbacks.")
    createdAt: Time

    @classmethod
    def of(cls, rule: AlertRule) -> AlertRuleOut:
        """Build the body of a rule."""
        return cls(
            id=rule.id,
            type=rule.type,
            params=rule.params,
            callbackUrl=rule.callback_url,
            createdAt=rule.created_at,
        )


class AlertRuleList(Response):
    """GET /v1/alerts/rules: the user's live rules, oldest first."""

    rules: list[AlertRuleOut]


class AlertDeliveryOut(Response):
    """The alert's own delivery: its status in the outbox and the `webhook-id` it carries."""

    id: int = Field(description="Its id in GET /v1/webhooks/deliveries/{id}.")
    webhookId: str = Field(description="The `webhook-id` header: the same on every attempt.")
    status: str = Field(description="`pending`, `succeeded` or `failed`.")
    attemptCount: int
    nextAttemptAt: Time
    completedAt: Time


class AlertOut(Response):
    """One fired alert: the body its POST carries, and how its delivery went."""

    id: str = Field(description="The alert's id (`alrt_...`), as its body carries it.")
    ruleId: int
    type: str = Field(description="`alert.<rule type>`.")
    timestamp: Time = Field(description="When the rule fired.")
    text: str = Field(description="A sentence a Slack-style incoming webhook shows.")
    data: dict[str, Any] = Field(description="Names the meeting or the delivery.")
    delivery: AlertDeliveryOut | None

    @classmethod
    def of(cls, alert: Alert, delivery: Delivery | None) -> AlertOut:
        """Build the listing of an alert and its delivery."""
        return cls(
            id=alert.public_id,
            ruleId=alert.rule_id,
            type=f"alert.{alert.type}",
            timestamp=alert.fired_at,
            text=alert.text,
            data=alert.data,
            delivery=None
            if delivery is None
            else AlertDeliveryOut(
                id=delivery.id,
                webhookId=delivery.message_id,
                status=delivery.status,
                attemptCount=delivery.attempt_count,
                nextAttemptAt=delivery.next_attempt_at,
                completedAt=delivery.completed_at,
            ),
        )


class AlertList(Response):
    """GET /v1/alerts: newest first, one page at a time."""

    alerts: list[AlertOut]
    nextCursor: str | None


class AlertQuery(BaseModel):
    """Query string of GET /v1/alerts; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    # Checked by the service, so that every bad cursor is the same 400 `invalid-cursor`.
    cursor: Cursor = None
