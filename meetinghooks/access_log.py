"""gunicorn's logger: its lines in the service's log format (core.logs), with secrets blanked out.

Presenter links, access tokens and signing secrets are redacted (core.redaction) from every
line gunicorn writes: the access log in any `--access-logformat` (request line, path, referer,
request headers) and the error log (`Error handling request /presenter/...`). With
LOG_FORMAT=json the access log is one JSON object per request with its fields (method, path,
status, duration, request id...), redacted the same way.

This module is loaded by gunicorn's master process, before any worker imports the app: it
imports nothing heavier than `core.logs`. The app's own lines take the same format through the
root logger, which `receiver.wsgi` sets up in each worker.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn.glogging import Logger

from core import logs
from core.redaction import REDACTED, redact

__all__ = ["REDACTED", "RedactSecrets", "RedactingLogger", "redact"]


class RedactSecrets(logging.Filter):
    """Rewrite each record's message with `redact` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted text; never drop a record."""
        # Formatting here once, then handing the handlers a finished string, also spares
        # them a second `format % atoms` of gunicorn's access line. The formatter redacts
        # again (and the `extra=` fields too); this filter still holds when a --log-config
        # replaces our handlers.
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def _header(headers: Any, name: str) -> str | None:
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        if key.lower() == name:
            return str(value)
    return None


class RedactingLogger(Logger):  # type: ignore[misc]  # gunicorn ships no annotations
    """gunicorn's logger (`--logger-class`): LOG_FORMAT lines, secrets redacted."""

    def setup(self, cfg: Any) -> None:
        """Configure gunicorn's handlers as usual, then format and filter both of its loggers."""
        # `meetinghooks serve` has validated LOG_FORMAT already; a bad value falls back to text.
        try:
            self.log_format = logs.parse_log_format(os.environ.get("LOG_FORMAT"))
        except ValueError:
            self.log_format = logs.DEFAULT_LOG_FORMAT
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(logs.formatter(self.log_format))
            # setup() runs again on every reload (SIGHUP); one filter per logger is enough.
            if not any(isinstance(existing, RedactSecrets) for existing in log.filters):
                log.addFilter(RedactSecrets())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """Log one request: gunicorn's access line as text, or its fields as JSON."""
        if not self.access_log_enabled:
            return
        # Set by the app (receiver.request_ids); gunicorn logs after the app has finished.
        request_id = _header(resp.headers, logs.REQUEST_ID_HEADER.lower())
        if self.log_format != "json":
            atoms = self.atoms_wrapper_class(self.atoms(resp, req, environ, request_time))
            try:  # gunicorn's own access(), with the request id after the line
                self.access_log.info(
                    self.cfg.access_log_format,
                    atoms,
                    extra={logs.REQUEST_ID: request_id} if request_id else None,
                )
            except Exception:  # noqa: BLE001  (as gunicorn's: log and carry on)
                self.exception("gunicorn.access.failed")
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        fields = {
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "protocol": environ.get("SERVER_PROTOCOL"),
            "status": int(status) if str(status).isdigit() else status,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "bytes": getattr(resp, "sent", None),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "referer": environ.get("HTTP_REFERER"),
            logs.REQUEST_ID: request_id,
        }
        try:
            self.access_log.info(
                "http.request", extra={k: v for k, v in fields.items() if v is not None}
            )
        except Exception:  # noqa: BLE001  (gunicorn's own access() logs and carries on too)
            self.exception("gunicorn.access.failed")
