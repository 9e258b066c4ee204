"""Which service the simulator drives and as whom: the loopback guard, the token, the secret."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from core import embedded_secret
from core.config import EMBEDDED_DIR, Settings
from core.db import make_engine, make_session_factory
from core.errors import ConfigError
from core.services import accounts

TOKEN_ENV = "MEETINGHOOKS_TOKEN"  # noqa: S105  (a variable's name, not a secret)
# The file `make run` keeps its data in; the simulator creates its user there only if it exists.
EMBEDDED_DATABASE = EMBEDDED_DIR / "meetinghooks.sqlite3"


def default_url() -> str:
    """Return where `make run` listens: 127.0.0.1 on PORT (8000)."""
    return f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        answers = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {str(info[4][0]).split("%", 1)[0] for info in answers}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_url(url: str, *, allow_remote: bool) -> str:
    """Return the service's base URL without a trailing slash; refuse a non-loopback one.

    Load belongs on a service of one's own: a typo must not aim it at production.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url must be an http(s) URL such as {default_url()}")
    if not allow_remote and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing to load {parts.hostname}, which is not a loopback address; "
            "pass --allow-remote if you mean it"
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class Identity:
    """The access token the simulator uses, and how it got it (for the opening line)."""

    token: str
    origin: str


def identity(token: str | None) -> Identity:
    """Use the given token, else $MEETINGHOOKS_TOKEN, else create a user in the service's database.

    The database is `DATABASE_URL`'s, or the embedded one of `make run` when this directory
    holds it; `meetinghooks users create` makes users the same way.
    """
    if token:
        return Identity(token, "the token given with --token")
    if os.environ.get(TOKEN_ENV):
        return Identity(os.environ[TOKEN_ENV], f"${TOKEN_ENV}")
    if not os.environ.get("DATABASE_URL") and not EMBEDDED_DATABASE.exists():
        raise ConfigError(
            f"no access token: pass --token (or set {TOKEN_ENV}), or run this from the "
            "directory where `make run` runs (it reads ./var/meetinghooks.sqlite3), or set "
            "DATABASE_URL to the service's database"
        )
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    email = f"simulate-{secrets.token_hex(4)}@example.com"
    try:
        with make_session_factory(engine).begin() as session:
            _user, issued = accounts.create_user(
                session, email=email, full_name="meetinghooks simulate"
            )
            token = issued.token
    finally:
        engine.dispose()
    return Identity(token, f"a new user {email}")


def ingest_secret(given: str | None) -> str | None:
    """Return the secret that signs platform events: given, $INGEST_SIGNING_SECRET, make run's."""
    if given:
        return given
    if os.environ.get("INGEST_SIGNING_SECRET"):
        return os.environ["INGEST_SIGNING_SECRET"]
    stored = Path(EMBEDDED_DIR) / embedded_secret.INGEST_SECRET_FILE
    if not os.environ.get("DATABASE_URL") and stored.exists():
        return stored.read_text().strip()
    return None
