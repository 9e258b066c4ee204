"""Standard Webhooks signatures: outgoing callbacks (SPEC 6) and the ingest check (SPEC 5)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import math
import re
from collections.abc import Sequence

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105  (a format prefix, not a secret)
# Standard Webhooks: the sender's clock may differ from ours by this much, either way.
TOLERANCE = dt.timedelta(minutes=5)
# Whole unix seconds, as Standard Webhooks sends them (no sign, no fraction).
TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")


def sign(secrets: Sequence[str], message_id: str, timestamp: dt.datetime, body: str) -> str:
    """Return the `webhook-signature` value: one `v1,<base64>` per secret, space-separated.

    During a rotation overlap both the new and the previous secret sign, so a receiver that
    still holds either verifies the callback (the Standard Webhooks spec allows a list).
    """
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    # The library reads the time as UTC whatever its zone says: hand it UTC.
    utc = timestamp.astimezone(dt.UTC)
    return " ".join(Webhook(secret).sign(message_id, utc, body) for secret in secrets)


def headers(
    secrets: Sequence[str], message_id: str, timestamp: dt.datetime, body: str
) -> dict[str, str]:
    """Return the headers of a signed callback; `timestamp` is sent in whole unix seconds."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(timestamp.timestamp())),
        "webhook-signature": sign(secrets, message_id, timestamp, body),
    }


class SignatureRejected(Exception):
    """Why a signature did not verify: a metrics reason and a message for the caller."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def signing_key(secret: str) -> bytes:
    """Return the HMAC key of a `whsec_<base64>` secret; raise ValueError if it is not one.

    Strict where the library is lenient (it ignores non-base64 characters); padding is
    optional, as in the library.
    """
    prefix, _, encoded = secret.partition(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if prefix or not key:
        raise ValueError("must be a Standard Webhooks secret: whsec_<base64>")
    return key


def check_signature(
    key: bytes,
    *,
    msg_id: str,
    timestamp: str,
    signatures: str,
    body: bytes,
    now: dt.datetime,
) -> None:
    """Raise SignatureRejected unless one `v1,` signature of the list signs id.timestamp.body.

    Over the raw bytes, not a decoded copy. Entries are separated by any whitespace; one that
    is not `v1,<base64>` (another version, garbage) is skipped, not fatal, so a valid
    signature anywhere in the list is found (Standard Webhooks allows several).
    """
    if not TIMESTAMP_RE.fullmatch(timestamp):
        raise SignatureRejected("bad-signature", "webhook-timestamp is not unix seconds")
    # Compared as numbers: a far-future value must be "too new", not a datetime overflow.
    age = now.timestamp() - int(timestamp)
    if age > TOLERANCE.total_seconds():
        raise SignatureRejected("stale-timestamp", "message timestamp too old")
    if age < -TOLERANCE.total_seconds():
        raise SignatureRejected("future-timestamp", "message timestamp too new")
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    expected = hmac.new(key, signed_content, hashlib.sha256).digest()
    matched = False
    for entry in signatures.split():
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma:
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        # Every entry is compared, in constant time each: no early exit to time.
        matched = hmac.compare_digest(expected, candidate) or matched
    if not matched:
        raise SignatureRejected("bad-signature", "no matching signature found")
