"""The SPEC 3 error body, checked on any response the hostile tests get."""

from __future__ import annotations

import json
import re
from typing import Any

KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# What a 500 may say (SPEC 3: never a traceback or an exception's text).
TRACEBACK_MARKERS = ("Traceback", 'File "', "Error:", "sqlalchemy", "psycopg")


def presenter_page(path: str, status: int, content_type: str) -> bool:
    """Say whether this is an HTML page for a person instead of a JSON error: a presenter link's
    answer (SPEC 4) or the console's, which signed-in people read in a browser."""
    for_people = path.startswith(("/presenter/", "/console"))
    return for_people and content_type.startswith("text/html")


def problems(status: int, content_type: str, body: bytes) -> list[str]:
    """Return what is wrong with an error response's body; [] when it is in the SPEC's shape."""
    if not content_type.startswith("application/json"):
        return [f"{status} answered {content_type or 'no content type'}, not JSON"]
    try:
        data: Any = json.loads(body)
    except ValueError:
        return [f"{status} body is not JSON: {body[:200]!r}"]
    if not isinstance(data, dict):
        return [f"{status} body is not an object: {data!r}"]
    found = []
    if not isinstance(data.get("Message"), str) or not data["Message"]:
        found.append(f"Message missing or not a non-empty string: {data!r}")
    if not isinstance(data.get("code"), str) or not KEBAB.match(data["code"]):
        found.append(f"code missing or not kebab-case: {data!r}")
    errors = data.get("errors")
    if not isinstance(errors, list):
        found.append(f"errors missing or not a list: {data!r}")
    else:
        for item in errors:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("field"), str)
                and isinstance(item.get("message"), str)
            ):
                found.append(f"errors item is not {{field, message}}: {item!r}")
    text = body.decode("utf-8", "replace")
    if status >= 500 and any(marker in text for marker in TRACEBACK_MARKERS):
        found.append(f"{status} body shows internals: {body[:200]!r}")
    return found


def has_control(text: str) -> bool:
    """Say whether text holds a C0 control character or DEL (refused in names)."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
