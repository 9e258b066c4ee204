"""`meetinghooks analytics summary|timeseries`: the analytics API's answers on the terminal."""

from __future__ import annotations

import argparse
import csv
import io
import json
from typing import TYPE_CHECKING, Any

from core.services import accounts, analytics

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session, sessionmaker

FORMATS = ("table", "json", "csv")


def _flatten(body: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return `{"meetings.started": 7, ...}` for a nested body."""
    flat: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """Right-aligned columns, as wide as their widest cell (80 columns for these bodies)."""
    cells = [header, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_summary(body: dict[str, Any], fmt: str) -> str:
    """Render a summary body as JSON (the API's exactly), a two-column table or CSV."""
    if fmt == "json":
        return json.dumps(body) + "\n"
    flat = _flatten(body)
    if fmt == "csv":
        return _csv(list(flat), [list(flat.values())])
    return _table(["figure", "value"], [[key, value] for key, value in flat.items()])


BUCKET_COLUMNS = ["start", "started", "ended", "avgDurationSeconds", "peakConcurrent"]


def render_timeseries(body: dict[str, Any], fmt: str) -> str:
    """Render a timeseries body as JSON (the API's exactly), a table of buckets or CSV."""
    if fmt == "json":
        return json.dumps(body) + "\n"
    rows = [[bucket[c] for c in BUCKET_COLUMNS] for bucket in body["buckets"]]
    if fmt == "csv":
        return _csv(BUCKET_COLUMNS, rows)
    title = f"{body['interval']} buckets from {body['from']} to {body['to']} (UTC)\n"
    return title + _table(["start", "started", "ended", "avg duration s", "peak"], rows)


def run(args: argparse.Namespace, session_factory: Callable[[], sessionmaker[Session]]) -> str:
    """Return the answer to one analytics command for the user named by --email."""
    values = {"from": args.from_, "to": args.to, "interval": getattr(args, "interval", None)}
    span = analytics.parse_range(values, buckets=args.action == "timeseries")
    factory = session_factory()
    try:
        with factory() as session:
            user = accounts.find_user(session, args.email)
            if args.action == "summary":
                found = analytics.summary(session, user.id, span).render()
                return render_summary(found, args.format)
            found = analytics.timeseries(session, user.id, span).render()
            return render_timeseries(found, args.format)
    finally:
        factory.kw["bind"].dispose()  # a one-shot command: close its connections


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[[argparse.Namespace], int],
) -> None:
    """Add `analytics summary|timeseries` to the CLI's sub-commands."""
    parser = sub.add_parser("analytics", help="summary and timeseries of a user's meetings")
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("summary", "meetings, durations and callbacks in a range"),
        ("timeseries", "meetings per UTC hour or day"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--email", required=True, help="the user whose data to show")
        action.add_argument(
            "--from", dest="from_", help="ISO-8601 with a zone; default to - 30 days"
        )
        action.add_argument("--to", help="ISO-8601 with a zone; default now")
        if name == "timeseries":
            action.add_argument("--interval", choices=("hour", "day"), default="day")
        action.add_argument("--format", choices=FORMATS, default="table")
        action.set_defaults(func=command)
