"""Random tokens, their hashes, public ids and signing secrets."""

from __future__ import annotations

import base64
import hashlib
import secrets

# Access tokens start with a fixed prefix: secret scanners and log filters can recognise them,
# and a token can never begin with "-", which a shell command line would take for an option.
ACCESS_TOKEN_PREFIX = "mhat_"  # noqa: S105  (a prefix, not a secret)


def new_token() -> str:
    """Return an opaque presenter token with 256 random bits."""
    return secrets.token_urlsafe(32)


def new_access_token() -> str:
    """Return an opaque bearer token with 256 random bits, under ACCESS_TOKEN_PREFIX."""
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which a token is stored.

    Tokens carry 256 random bits, so a fast unsalted hash is enough: nothing to brute-force.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def new_public_id(prefix: str) -> str:
    """Return a prefixed random id such as `evt_...`, `wh_...` or `msg_...`."""
    return f"{prefix}_{secrets.token_hex(12)}"


def new_signing_secret() -> str:
    """Return a Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def random_digits(length: int) -> str:
    """Return `length` random decimal digits; leading zeros kept."""
    return "".join(secrets.choice("0123456789") for _ in range(length))
