"""`meetinghooks deliveries replay`: the replay API's bulk re-send, for an operator."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from core import wakeups
from core.errors import ValidationFailed
from core.replay_schemas import IDEMPOTENCY_KEY_RE, REPLAYABLE_STATUSES, ReplayIn, ReplayOut
from core.services import accounts, delivery_replay
from core.validation import validate

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session, sessionmaker


def run(
    args: argparse.Namespace,
    session_factory: sessionmaker[Session],
    publish: wakeups.Publish,
) -> str:
    """Replay the matching callbacks of the user named by --email; return the answer to print.

    The new deliveries' wake-ups go through `publish` once the replay has committed, as the
    API's do; a lost one is re-sent by the sweep.
    """
    key = args.idempotency_key
    if key is not None and not IDEMPOTENCY_KEY_RE.match(key):
        raise ValidationFailed("--idempotency-key must be 1 to 255 printable ASCII characters")
    values: dict[str, Any] = {"from": args.from_, "to": args.to, "status": args.status}
    if args.meeting is not None:
        values["meetingId"] = args.meeting
    if args.event_type is not None:
        values["eventType"] = args.event_type
    request = validate(ReplayIn, values)
    wakeups.publish_after_commit(session_factory, publish)
    with session_factory.begin() as session:
        user = accounts.find_user(session, args.email)
        replayed = delivery_replay.replay(session, user.id, request, idempotency_key=key)
        count = replayed.replay.delivery_count
        repeated = replayed.repeated
    if args.json:
        return json.dumps(ReplayOut(count=count).render()) + "\n"
    if repeated:
        return f"{count} deliveries were queued again by the first replay under this key\n"
    return f"{count} deliveries queued again, each with a new webhook-id\n"


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[[argparse.Namespace], int],
) -> None:
    """Add `deliveries replay` to the CLI's sub-commands."""
    parser = sub.add_parser("deliveries", help="a user's callback deliveries")
    actions = parser.add_subparsers(dest="action", required=True)
    replay = actions.add_parser(
        "replay",
        help="re-send a user's failed (or succeeded) callbacks in an event-time range,"
        " each with a new webhook-id; prints the count",
    )
    replay.add_argument("--email", required=True, help="the user whose callbacks to re-send")
    replay.add_argument(
        "--from", dest="from_", required=True, help="event time from (inclusive), with a zone"
    )
    replay.add_argument("--to", required=True, help="event time to (exclusive), with a zone")
    replay.add_argument("--status", choices=REPLAYABLE_STATUSES, default="failed")
    replay.add_argument("--meeting", type=int, default=None, help="only this meeting's")
    replay.add_argument("--event-type", choices=("meeting.start", "meeting.end"), default=None)
    replay.add_argument(
        "--idempotency-key",
        default=None,
        help="as the API's header: a repeat within 24 hours sends nothing again",
    )
    replay.add_argument("--json", action="store_true", help="print the API's body")
    replay.set_defaults(func=command)
