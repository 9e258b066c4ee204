"""Read request bodies: JSON or form-encoded, with clear 400/413/415 errors."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from core.errors import DomainError, ValidationFailed

JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Deeper bodies are refused: nothing we accept needs more, and Python's JSON parser and
# encoder recurse (a 64 KiB body of brackets would otherwise be a 500).
MAX_JSON_DEPTH = 64


class UnsupportedMediaType(DomainError):
    """The body's content type is not one this endpoint reads."""

    status = 415
    code = "unsupported-media-type"


def read_raw() -> bytes:
    """Return the body bytes; raise 413 when they exceed the limit, chunked bodies included."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    # Without a Content-Length werkzeug stops reading at the limit and returns what it read,
    # silently cut: a body that fills the limit exactly may have been cut, so it is refused.
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge
    return raw


def read_object(*, allow_form: bool = False, allow_empty: bool = False) -> dict[str, Any]:
    """Return the body as a dict.

    An absent or empty body is `{}` when `allow_empty`; form bodies give their scalar fields
    as strings when `allow_form`; JSON must be an object. Oversized bodies raise 413 here.
    """
    mimetype = request.mimetype
    if allow_form and mimetype in FORM_TYPES:
        return {key: request.form.get(key) for key in request.form}
    raw = read_raw()
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationFailed("request body is required", code="body-required")
    if mimetype in JSON_TYPES or mimetype.endswith("+json"):
        return parse_json_object(raw)
    accepted = "application/json" + (" or application/x-www-form-urlencoded" if allow_form else "")
    raise UnsupportedMediaType(f"Content-Type must be {accepted}")


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); PostgreSQL's json type refuses them too.
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """Return how deeply `value` nests containers (iteratively: the input may be deep)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            level += 1
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((child, level) for child in item)
    return deepest


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object strictly: UTF-8, no NaN/Infinity, at most MAX_JSON_DEPTH levels."""
    try:
        # Decode first: json.loads(bytes) would guess UTF-16/32 and read them. RFC 8259 allows
        # UTF-8 only; a byte-order mark then fails to parse, and so is 400 too.
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationFailed("request body is not valid JSON", code="malformed-json") from None
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object", code="malformed-json")
    if _depth(data) > MAX_JSON_DEPTH:
        raise ValidationFailed(
            f"request body nests deeper than {MAX_JSON_DEPTH} levels", code="malformed-json"
        )
    return data
