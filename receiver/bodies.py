"""Read request bodies: JSON or form-encoded, with clear 400/413/415 errors."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from core.errors import DomainError, ValidationFailed

JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class UnsupportedMediaType(DomainError):
    """The body's content type is not one this endpoint reads."""

    status = 415
    code = "unsupported-media-type"


def read_object(*, allow_form: bool = False, allow_empty: bool = False) -> dict[str, Any]:
    """Return the body as a dict.

    An absent or empty body is `{}` when `allow_empty`; form bodies give their scalar fields
    as strings when `allow_form`; JSON must be an object. Oversized bodies raise 413 here.
    """
    mimetype = request.mimetype
    if allow_form and mimetype in FORM_TYPES:
        return {key: request.form.get(key) for key in request.form}
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationFailed("request body is required", code="body-required")
    if mimetype in JSON_TYPES or mimetype.endswith("+json"):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ValidationFailed(
                "request body is not valid JSON", code="malformed-json"
            ) from None
        if not isinstance(data, dict):
            raise ValidationFailed("request body must be a JSON object", code="malformed-json")
        return data
    accepted = "application/json" + (" or application/x-www-form-urlencoded" if allow_form else "")
    raise UnsupportedMediaType(f"Content-Type must be {accepted}")
