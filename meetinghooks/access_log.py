"""gunicorn's logger, with the secrets a request can carry blanked out of every line it writes.

A presenter link is a one-time bearer secret in the URL path (SPEC 4): the plain access log
line `"GET /presenter/<token> HTTP/1.1"` would let anyone who reads the logs start a meeting
whose link is not used yet. The filter works on the finished line, so it holds for any
`--access-logformat` (request line, path, referer, request headers) and for gunicorn's error
log (`Error handling request /presenter/...`) alike.

This module is loaded by gunicorn's master process, before any worker imports the app: it
imports nothing heavier than `core.security`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gunicorn.glogging import Logger

from core.security import ACCESS_TOKEN_PREFIX

REDACTED = "<redacted>"
_SIGNING_SECRET_PREFIX = "whsec_"  # noqa: S105  (a format prefix, not a secret)

# A presenter token is the path segment after /presenter/ (the slash also percent-encoded, as
# werkzeug decodes it before routing); access tokens and signing secrets are recognised by
# their prefixes wherever they appear (a query string, a logged header).
_SECRET = re.compile(
    r"(?P<presenter>/presenter(?:/|%2f))[^\s/?#\"']+"
    rf"|(?P<token>{re.escape(ACCESS_TOKEN_PREFIX)})[A-Za-z0-9_\-%]+"
    rf"|(?P<secret>{re.escape(_SIGNING_SECRET_PREFIX)})[A-Za-z0-9+/=%]+",
    re.IGNORECASE,
)
# Cheap substring tests first: almost no line holds any of these.
_MARKERS = ("presenter", ACCESS_TOKEN_PREFIX, _SIGNING_SECRET_PREFIX)


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = match.group("presenter") or match.group("token") or match.group("secret")
    return prefix + REDACTED


def redact(text: str) -> str:
    """Return `text` with presenter tokens, access tokens and signing secrets replaced."""
    lowered = text.lower()
    if not any(marker in lowered for marker in _MARKERS):
        return text
    return _SECRET.sub(_keep_prefix, text)


class RedactSecrets(logging.Filter):
    """Rewrite each record's message with `redact` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted text; never drop a record."""
        # Formatting here once, then handing the handlers a finished string, also spares
        # them a second `format % atoms` of gunicorn's access line.
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


class RedactingLogger(Logger):  # type: ignore[misc]  # gunicorn ships no annotations
    """gunicorn's logger (`--logger-class`); its access and error logs pass `RedactSecrets`."""

    def setup(self, cfg: Any) -> None:
        """Configure gunicorn's handlers as usual, then filter both of its loggers."""
        super().setup(cfg)
        # setup() runs again on every reload (SIGHUP); one filter per logger is enough.
        for log in (self.error_log, self.access_log):
            if not any(isinstance(existing, RedactSecrets) for existing in log.filters):
                log.addFilter(RedactSecrets())
