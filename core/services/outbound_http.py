"""The outbound HTTP client: one signed POST per attempt, behind the SSRF guard and a deadline.

Every outbound message (a meeting's callback, an alert) goes through `send`. It never
touches the database and never raises for anything a receiver or the network does: the
result is an `Outcome` with a status code or a stable error class. Connections pass the
SSRF guard at connect time (`core.ssrf`), and each attempt is cut off by
`core.http_deadline` however slowly the receiver answers.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.cookiejar as http_cookiejar
import logging
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import requests

from core import http_deadline, signing, ssrf

log = logging.getLogger(__name__)

RESPONSE_BODY_LIMIT = 4096
MAX_RETRY_AFTER = dt.timedelta(hours=24)
USER_AGENT = "meetinghooks-webhooks/1.0"
DEFAULT_PORTS = {"http": 80, "https": 443}


def destination_host(url: str) -> str:
    """Return the `host:port` a callback URL is sent to, as the per-host bound counts it.

    The port is part of it (two receivers behind one name but different ports are two
    destinations); the default port of the scheme is written out, so that `https://a` and
    `https://a:443` are one. An unreadable URL gives '' (it fails at its first attempt).
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        return ""
    host = (parts.hostname or "").lower()
    return f"{host}:{port}" if host else ""


class Message(Protocol):
    """What `send` needs of a leased delivery (`delivery_states.Claim` is one)."""

    @property
    def delivery_id(self) -> int: ...
    @property
    def message_id(self) -> str: ...
    @property
    def callback_url(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def secrets(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt gave: status or error class, latency, the start of the body."""

    status_code: int | None
    latency_ms: int
    error: str | None
    response_body: str | None = None
    retry_after: dt.timedelta | None = None

    @property
    def succeeded(self) -> bool:
        """Tell whether the receiver answered 2xx within the timeout."""
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def make_http_session(
    allowed_networks: Sequence[ssrf.IPNetwork] = (), *, pool_maxsize: int = 10
) -> requests.Session:
    """Return a pooled HTTP session whose every connection passes the SSRF guard.

    No proxies from the environment (a proxy would resolve names past the guard), no
    retries inside requests (retries are rows with `next_attempt_at`), no redirects, no
    cookies.
    `pool_maxsize` is the idle connections kept per receiver, and as many receivers are
    kept: one thread each, when every thread of a pool that size calls a different one.
    """
    http = requests.Session()
    http.trust_env = False
    # No cookie is kept: a receiver's Set-Cookie must not ride along on later callbacks.
    http.cookies.set_policy(http_cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = ssrf.GuardedAdapter(
        allowed_networks,
        pool_connections=max(10, pool_maxsize),
        pool_maxsize=pool_maxsize,
        max_retries=0,
    )
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    http.headers["User-Agent"] = USER_AGENT
    return http


def send(
    http: requests.Session, claimed: Message, *, timeout: float, now: dt.datetime | None = None
) -> Outcome:
    """POST the signed message once; never raises for anything the receiver or network does.

    `timeout` bounds the connect and each read, and the whole attempt (name lookup aside) is
    cut off after twice `timeout`, however slowly the receiver trickles its answer; the
    response body is read until RESPONSE_BODY_LIMIT bytes or that deadline.
    """
    timestamp = now or dt.datetime.now(dt.UTC)
    headers = signing.headers(claimed.secrets, claimed.message_id, timestamp, claimed.body)
    started = time.monotonic()
    with http_deadline.limit(2 * timeout) as deadline:
        try:
            # Prepared here rather than by `http.post`: the session has no cookies, auth or
            # hooks to merge, and that merging cost more than the request's own preparation.
            request = requests.PreparedRequest()
            request.prepare(
                method="POST",
                url=claimed.callback_url,
                headers={**http.headers, **headers},
                data=claimed.body.encode(),
            )
            response = http.send(
                request, timeout=(timeout, timeout), allow_redirects=False, stream=True
            )
        except (ssrf.CallbackUrlRefused, requests.RequestException) as exc:
            failure = "timeout" if deadline.expired else error_class(exc)
            return Outcome(status_code=None, latency_ms=_elapsed_ms(started), error=failure)
        except Exception:
            # Whatever went wrong must end as a recorded attempt, or the delivery would loop.
            log.exception("core.delivery.send_failed delivery=%s", claimed.delivery_id)
            return Outcome(
                status_code=None, latency_ms=_elapsed_ms(started), error="internal-error"
            )
        latency_ms = _elapsed_ms(started)
        try:
            body = _read_capped(response, deadline=deadline.expires_at)
        finally:
            response.close()
    status = response.status_code
    error = None if 200 <= status < 300 else _status_error(status)
    if error is None and latency_ms > timeout * 1000:
        # SPEC 6: success is a 2xx *within* the timeout. Connect and read timeouts each
        # bound one step; a status line that came later than the whole budget still fails.
        error = "timeout"
    return Outcome(
        status_code=status,
        latency_ms=latency_ms,
        error=error,
        response_body=body.decode("utf-8", errors="replace"),
        retry_after=parse_retry_after(response.headers.get("Retry-After"), now=timestamp),
    )


# Most specific first: requests' ConnectTimeout is both a Timeout and a ConnectionError.
_ERROR_CLASSES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (ssrf.ForbiddenAddress, "ssrf-refused"),
    (ssrf.Unresolvable, "dns-error"),
    ((ssrf.CallbackUrlRefused, requests.exceptions.InvalidURL), "invalid-url"),
    (requests.Timeout, "timeout"),
    (requests.exceptions.SSLError, "tls-error"),
    (requests.ConnectionError, "connection-error"),
)


def error_class(exc: BaseException) -> str:
    """Return the stable error class the delivery log shows for a failed request."""
    for types, name in _ERROR_CLASSES:
        if isinstance(exc, types):
            return name
    return "request-error"


def _status_error(status: int) -> str:
    return "redirect" if 300 <= status < 400 else f"http-{status}"


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _read_capped(response: requests.Response, *, deadline: float) -> bytes:
    # Read a little past the limit so that a fully read body lets the connection go back to
    # the pool; stop early on a huge or dribbling body, which closes the connection instead.
    body = b""
    try:
        for chunk in response.iter_content(chunk_size=1024):
            body += chunk
            if len(body) > RESPONSE_BODY_LIMIT or time.monotonic() > deadline:
                break
    except requests.RequestException:
        pass  # the status line already decided the outcome; keep what arrived
    return body[:RESPONSE_BODY_LIMIT]


def parse_retry_after(value: str | None, *, now: dt.datetime) -> dt.timedelta | None:
    """Parse Retry-After (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Anything longer than nine digits is beyond every bound we honour; int() and
        # timedelta() would refuse (or overflow on) a receiver's absurd value.
        return MAX_RETRY_AFTER if len(value) > 9 else dt.timedelta(seconds=int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - now, dt.timedelta(0))
