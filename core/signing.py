"""Standard Webhooks signatures for outgoing callbacks (SPEC 6)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from standardwebhooks import Webhook


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
