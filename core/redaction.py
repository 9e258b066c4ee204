"""Blank out the secrets a log line can carry: presenter tokens, access tokens, signing secrets.

A presenter link is a one-time bearer secret in the URL path (SPEC 4): the plain access log
line `"GET /presenter/<token> HTTP/1.1"` would let anyone who reads the logs start a meeting
whose link is not used yet. Access tokens and signing secrets are recognised by their prefixes
wherever they appear (a query string, a logged header, an exception's text).
"""

from __future__ import annotations

import re

from core.security import ACCESS_TOKEN_PREFIX

REDACTED = "<redacted>"
SIGNING_SECRET_PREFIX = "whsec_"  # noqa: S105  (a format prefix, not a secret)

# A presenter token is the path segment after /presenter/ (the slash also percent-encoded, as
# werkzeug decodes it before routing).
_SECRET = re.compile(
    r"(?P<presenter>/presenter(?:/|%2f))[^\s/?#\"']+"
    rf"|(?P<token>{re.escape(ACCESS_TOKEN_PREFIX)})[A-Za-z0-9_\-%]+"
    rf"|(?P<secret>{re.escape(SIGNING_SECRET_PREFIX)})[A-Za-z0-9+/=%]+",
    re.IGNORECASE,
)
# Cheap substring tests first: almost no line holds any of these.
_MARKERS = ("presenter", ACCESS_TOKEN_PREFIX, SIGNING_SECRET_PREFIX)


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = match.group("presenter") or match.group("token") or match.group("secret")
    return prefix + REDACTED


def redact(text: str) -> str:
    """Return `text` with presenter tokens, access tokens and signing secrets replaced."""
    lowered = text.lower()
    if not any(marker in lowered for marker in _MARKERS):
        return text
    return _SECRET.sub(_keep_prefix, text)
