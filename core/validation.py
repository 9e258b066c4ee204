"""Validation helpers shared by every payload: join.me's tolerant booleans, ISO times, errors."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ValidationError, WithJsonSchema

from core.errors import FieldError, ValidationFailed

ModelT = TypeVar("ModelT", bound=BaseModel)
DATETIME_PATTERN = (
    r"^(?!0000|0001-01-01|9999-12-31)[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
    r"(:[0-5][0-9](\.[0-9]+)?)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def _join_me_bool(value: Any) -> Any:
    # Real join.me clients send "true"/"false"; anything else but a JSON boolean is refused.
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError('must be a boolean (true, false, "true" or "false")')


def _aware_datetime(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            # RFC 3339 allows a lowercase "z" too.
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("must be an ISO-8601 date-time") from None
    else:
        raise ValueError("must be an ISO-8601 date-time string")
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (Z or an offset)")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        # 9999-12-31T23:59-05:00 is a valid ISO string whose UTC instant does not exist.
        raise ValueError("is out of range") from None


JoinMeBool = Annotated[
    bool,
    BeforeValidator(_join_me_bool),
    # The document says what the validator accepts: real clients send the strings too.
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]}),
]
AwareDatetime = Annotated[
    dt.datetime,
    BeforeValidator(_aware_datetime),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            # RFC 3339 times Python cannot hold are refused too: year 0, leap seconds, and
            # the first and last days of the calendar, where an offset leaves its range.
            "pattern": DATETIME_PATTERN,
            "description": "ISO-8601 with a time zone (`Z` or an offset); naive times are a 400.",
        }
    ),
]


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into our `errors` list, one entry per bad field."""
    errors: list[FieldError] = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        errors.append({"field": field, "message": message})
    return errors


def validate(model: type[ModelT], data: Any) -> ModelT:
    """Validate `data` into `model`, raising ValidationFailed listing every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise ValidationFailed(f"invalid request: {summary}", errors=errors) from None


def isoformat(value: dt.datetime | None) -> str | None:
    """Render a time in UTC to the whole second with a `Z` (as SPEC's examples), or None."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
