"""Settings read from the environment once, typed and validated at start-up."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from limits import parse_many
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from core import embedded_secret
from core.errors import ConfigError
from core.logs import DEFAULT_LOG_FORMAT, LogFormat, parse_log_format
from core.signing import signing_key

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)
# One wait of the retry schedule: fractions allowed (quick local tests), at most 30 days.
RetryWait = Annotated[float, Field(ge=0, le=30 * 86400, allow_inf_nan=False)]
EMBEDDED_DIR = Path("var")
# Loopback is admitted in the embedded mode only, so that a newcomer can point callbacks at a
# receiver on the same machine (SPEC 6). Production starts with an empty allow-list.
EMBEDDED_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"
# Rate limits in the `limits` string syntax (several separated by ";"); "off" switches one off.
DEFAULT_RATE_LIMIT_API = "600/minute"
DEFAULT_RATE_LIMIT_INGEST = "1000/second"
RATE_LIMIT_OFF = "off"
# The `limits` storages we configure (receiver.limits): its memory storage and plain Redis.
RATE_LIMIT_STORAGE_SCHEMES = frozenset({"memory", "redis", "rediss", "redis+unix"})
# The console's session signing key: generated once in the embedded mode and kept here.
MIN_SECRET_KEY_LENGTH = 32


class Settings(BaseModel):
    """Every setting of the service; build it with `Settings.from_env()` or directly in tests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str
    broker_url: str
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    public_base_url: str = ""
    ingest_signing_secret: str | None = None
    presenter_link_ttl_seconds: Annotated[int, Field(ge=1)] = 600
    callback_allowed_networks: tuple[IPNetwork, ...] = ()
    retry_schedule: tuple[RetryWait, ...] = DEFAULT_RETRY_SCHEDULE
    callback_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    inbox_sweep_after_seconds: Annotated[float, Field(gt=0)] = 5.0
    sweep_interval_seconds: Annotated[float, Field(gt=0)] = 2.0
    broker_polling_interval: Annotated[float, Field(gt=0)] = 0.1
    # Redis only: a prefix for every broker key, so that deployments (or test runs) can share
    # one Redis database without seeing each other's queues.
    broker_key_prefix: str = ""
    # Where `meetinghooks worker` serves its Prometheus metrics (none: not served).
    worker_metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    worker_metrics_host: str = "127.0.0.1"
    # Pools of `meetinghooks worker`: events in processes (CPU and the database), deliveries in
    # threads (they mostly wait on receivers, up to twice CALLBACK_TIMEOUT_SECONDS each).
    event_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    delivery_concurrency: Annotated[int, Field(ge=1, le=1000)] = 32
    # Attempts in flight to one callback host (`host:port`) across every worker: counted from
    # the live leases at each claim, in the database.
    delivery_max_in_flight_per_host: Annotated[int, Field(ge=1, le=10000)] = 8
    embedded: bool = False
    log_level: str = "INFO"
    # Every process's lines: human-readable text, or one JSON object a line (core.logs).
    log_format: LogFormat = DEFAULT_LOG_FORMAT
    # After SIGTERM: how long `serve` lets requests in flight finish (gunicorn's graceful
    # timeout) and `worker` lets tasks in flight finish before killing them. None: 30 s for
    # `serve`, the longest callback attempt (2 x callback_timeout_seconds) + 10 s for `worker`.
    graceful_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] | None = None
    # Per access token on the /v1 API, and for POST /v1/events (the platform) on its own; None
    # is off. Counters live in RATE_LIMIT_STORAGE_URL, else in a Redis broker (receiver.limits).
    rate_limit_api: str | None = DEFAULT_RATE_LIMIT_API
    rate_limit_ingest: str | None = DEFAULT_RATE_LIMIT_INGEST
    rate_limit_storage_url: str | None = None
    # Signs the console's session cookie (docs/DECISIONS.md "Web console"); None: console off.
    secret_key: SecretStr | None = None

    @field_validator("public_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("log_format", mode="before")
    @classmethod
    def _known_log_format(cls, value: object) -> object:
        return parse_log_format(value) if isinstance(value, str) else value

    @field_validator("ingest_signing_secret")
    @classmethod
    def _usable_ingest_secret(cls, value: str | None) -> str | None:
        # A secret the verifier cannot use would fail every request at run time: refuse it now.
        if value is not None:
            signing_key(value)
        return value

    @field_validator("rate_limit_api", "rate_limit_ingest")
    @classmethod
    def _parsable_rate_limit(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() == RATE_LIMIT_OFF:
            return None
        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ValueError(
                f'must be "{RATE_LIMIT_OFF}" or limits of at least 1 such as "600/minute" '
                '(several separated by ";")'
            )
        return value.strip()

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _known_storage(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme, separator, _ = value.partition("://")
        if not separator or scheme.lower() not in RATE_LIMIT_STORAGE_SCHEMES:
            # The URL may hold a password: the message names the schemes, never the value.
            raise ValueError("must be memory:// or a redis://, rediss://, redis+unix:// URL")
        return value

    @field_validator("secret_key")
    @classmethod
    def _long_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_KEY_LENGTH} characters")
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _schedule_not_empty(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("must be a non-empty list of non-negative seconds")
        return value

    @property
    def base_url(self) -> str:
        """Return the public base URL, defaulting to http://HOST:PORT."""
        return self.public_base_url or f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment; raise ConfigError naming every bad variable.

        Without DATABASE_URL and BROKER_URL the service runs embedded: SQLite and kombu's
        SQLAlchemy transport under ./var, loopback callbacks allowed. Outside the embedded
        mode secrets have no defaults.
        """
        env = os.environ if environ is None else environ
        embedded = not env.get("DATABASE_URL") and not env.get("BROKER_URL")
        if embedded:
            EMBEDDED_DIR.mkdir(exist_ok=True)
        raw: dict[str, object] = {
            "database_url": env.get("DATABASE_URL")
            or f"sqlite:///{(EMBEDDED_DIR / 'meetinghooks.sqlite3').resolve()}",
            "broker_url": env.get("BROKER_URL")
            or f"sqla+sqlite:///{(EMBEDDED_DIR / 'broker.sqlite3').resolve()}",
            "embedded": embedded,
        }
        simple = {
            "HOST": "host",
            "PORT": "port",
            "PUBLIC_BASE_URL": "public_base_url",
            "INGEST_SIGNING_SECRET": "ingest_signing_secret",
            "PRESENTER_LINK_TTL_SECONDS": "presenter_link_ttl_seconds",
            "CALLBACK_TIMEOUT_SECONDS": "callback_timeout_seconds",
            "MAX_BODY_BYTES": "max_body_bytes",
            "INBOX_SWEEP_AFTER_SECONDS": "inbox_sweep_after_seconds",
            "SWEEP_INTERVAL_SECONDS": "sweep_interval_seconds",
            "BROKER_POLLING_INTERVAL": "broker_polling_interval",
            "BROKER_KEY_PREFIX": "broker_key_prefix",
            "WORKER_METRICS_PORT": "worker_metrics_port",
            "WORKER_METRICS_HOST": "worker_metrics_host",
            "EVENT_CONCURRENCY": "event_concurrency",
            "DELIVERY_CONCURRENCY": "delivery_concurrency",
            "DELIVERY_MAX_IN_FLIGHT_PER_HOST": "delivery_max_in_flight_per_host",
            "LOG_LEVEL": "log_level",
            "LOG_FORMAT": "log_format",
            "GRACEFUL_TIMEOUT_SECONDS": "graceful_timeout_seconds",
            "RATE_LIMIT_API": "rate_limit_api",
            "RATE_LIMIT_INGEST": "rate_limit_ingest",
            "RATE_LIMIT_STORAGE_URL": "rate_limit_storage_url",
            "SECRET_KEY": "secret_key",
        }
        for name, field in simple.items():
            if env.get(name):
                raw[field] = env[name]
        networks = env.get("CALLBACK_ALLOWED_NETWORKS")
        if networks is None and embedded:
            networks = EMBEDDED_ALLOWED_NETWORKS
        if embedded and not env.get("INGEST_SIGNING_SECRET"):
            # So that `meetinghooks simulate` (and a newcomer's curl) can play the platform on
            # the same machine: it reads the same file.
            raw["ingest_signing_secret"] = embedded_secret.ingest_secret(EMBEDDED_DIR)
        raw["callback_allowed_networks"] = _split(networks or "")
        if env.get("RETRY_SCHEDULE"):
            raw["retry_schedule"] = _split(env["RETRY_SCHEDULE"])
        if embedded and not env.get("SECRET_KEY"):
            raw["secret_key"] = embedded_secret.session_key(EMBEDDED_DIR)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            names = {field: name for name, field in simple.items()}
            names.update(
                callback_allowed_networks="CALLBACK_ALLOWED_NETWORKS",
                retry_schedule="RETRY_SCHEDULE",
            )
            problems = [
                f"{names.get(str(err['loc'][0]), str(err['loc'][0]))}: {err['msg']}"
                for err in exc.errors()
            ]
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
