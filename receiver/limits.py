"""Rate limits (SPEC 3): per access token on the /v1 API, and on the platform's ingest apart.

flask-limiter counts, in the `limits` storage this module picks: a Redis shared by every
receiver in production, process memory in the embedded mode. A storage that fails never takes
the API down: each process falls back to counting in its own memory until Redis answers again.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from flask import Response, current_app, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from prometheus_client import Counter

from core.security import hash_token

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask

    from core.config import Settings

log = logging.getLogger(__name__)

API_LIMIT: Final = "api"
INGEST_LIMIT: Final = "ingest"
INGEST_ENDPOINT: Final = "events.ingest"
API_PATH_PREFIX: Final = "/v1/"
EXTENSION: Final = "meetinghooks.limiter"
REDIS_SCHEMES: Final = ("redis://", "rediss://")
# A Redis that hangs must not hold requests: a second per call at most, and no redis-py
# retries, before the memory fallback takes over.
STORAGE_TIMEOUT_SECONDS: Final = 1.0
# Responses that never passed the signature check: anyone can send them, so they must not
# spend the platform's budget.
UNVERIFIED_INGEST_STATUSES: Final = frozenset({401, 413, 429})

RATE_LIMITED = Counter(
    "meetinghooks_rate_limited",
    "Requests refused with 429 by a rate limit, by limit (api: per access token; ingest)",
    ["limit"],
)


@dataclass(frozen=True)
class Refusal:
    """What a 429 tells the client: which limit, in words, and when to come back."""

    limit: str
    message: str
    retry_after: int


def storage_url(settings: Settings) -> str:
    """Return where the counters live: RATE_LIMIT_STORAGE_URL, else a Redis broker, else memory."""
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.broker_url.startswith(REDIS_SCHEMES):
        return settings.broker_url
    return "memory://"


def install(app: Flask, settings: Settings) -> Limiter | None:
    """Count every /v1 request against its limit; return None when both limits are off."""
    limits: list[str | Callable[[], str] | ApplicationLimit] = []
    if settings.rate_limit_api:
        limits.append(
            ApplicationLimit(
                settings.rate_limit_api,
                key_function=_api_client,
                scope=API_LIMIT,
                exempt_when=_not_api,
            )
        )
    if settings.rate_limit_ingest:
        limits.append(
            ApplicationLimit(
                settings.rate_limit_ingest,
                key_function=_platform,
                scope=INGEST_LIMIT,
                exempt_when=_not_ingest,
                deduct_when=_signature_verified,
            )
        )
    if not limits:
        return None
    url = storage_url(settings)
    in_memory = url.startswith("memory://")
    if in_memory and not settings.embedded:
        log.warning(
            "receiver.rate_limit.per_process: counters are kept in each receiver process; "
            "set RATE_LIMIT_STORAGE_URL to a Redis to share them between receivers"
        )
    options: dict[str, Any] = {}
    if not in_memory:
        options = {
            # BROKER_KEY_PREFIX keeps deployments (and test runs) sharing one Redis apart.
            "key_prefix": f"{settings.broker_key_prefix}meetinghooks-rate-limits",
            "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
            "socket_timeout": STORAGE_TIMEOUT_SECONDS,
            "retry": None,
        }
    limiter = Limiter(
        _api_client,
        application_limits=limits,
        storage_uri=url,
        storage_options=options,
        strategy="fixed-window",
        # Redis down: count in this process's memory, and look for Redis again (1 s, 2 s, ...
        # up to 32 s apart). Any other storage error lets the request through, logged.
        in_memory_fallback_enabled=not in_memory,
        swallow_errors=True,
        headers_enabled=False,  # ours below: flask-limiter would put Retry-After on every 200
    )
    limiter.init_app(app)
    # Its INFO line per refusal would log every 429 of a flood, naming the token's digest;
    # meetinghooks_rate_limited counts them. Its warning that the storage is down still shows.
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)
    app.extensions[EXTENSION] = limiter
    app.after_request(_add_rate_limit_headers)
    return limiter


def refusal(exc: RateLimitExceeded) -> Refusal:
    """Describe the limit a request broke, counting the refusal."""
    name = str(exc.limit.scope)
    RATE_LIMITED.labels(limit=name).inc()
    item = exc.limit.limit
    retry_after = int(item.get_expiry())
    limiter: Limiter = current_app.extensions[EXTENSION]
    breached = limiter.current_limit
    if breached is not None:
        try:
            retry_after = math.ceil(breached.window.reset_time - time.time())
        except Exception:  # the storage failed since: the window's length is an upper bound
            log.warning("receiver.rate_limit.window_unknown", exc_info=True)
    retry_after = max(1, retry_after)
    who = "this access token" if name == API_LIMIT else "event ingest"
    return Refusal(
        limit=name,
        message=f"rate limit of {item} exceeded for {who}; retry in {retry_after} s",
        retry_after=retry_after,
    )


def _api_client() -> str:
    # The bearer token as auth.py reads it, by its stored SHA-256 digest: one counter per
    # token record, no database query before auth, and never the token itself in Redis.
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        return f"token:{hash_token(token)}"
    # Without a token the request is refused (401) anyway: those share one counter per address.
    return f"address:{request.remote_addr or 'unknown'}"


def _platform() -> str:
    return "platform"  # one signing secret, one platform: one counter


def _not_api() -> bool:
    return not request.path.startswith(API_PATH_PREFIX) or request.endpoint == INGEST_ENDPOINT


def _not_ingest() -> bool:
    return request.endpoint != INGEST_ENDPOINT


def _signature_verified(response: Response) -> bool:
    return response.status_code not in UNVERIFIED_INGEST_STATUSES


def _add_rate_limit_headers(response: Response) -> Response:
    # API clients can pace themselves with these; the platform's senders do not read them, so
    # ingest is spared the extra storage round trip.
    if request.endpoint == INGEST_ENDPOINT:
        return response
    limiter: Limiter = current_app.extensions[EXTENSION]
    current = limiter.current_limit
    if current is None:
        return response
    try:
        window = current.window
    except Exception:  # a storage failure costs the headers, never the response
        log.warning("receiver.rate_limit.headers_skipped", exc_info=True)
        return response
    response.headers["X-RateLimit-Limit"] = str(current.limit.amount)
    response.headers["X-RateLimit-Remaining"] = str(max(0, window.remaining))
    response.headers["X-RateLimit-Reset"] = str(math.ceil(window.reset_time))
    return response
