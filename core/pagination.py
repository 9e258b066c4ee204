"""Keyset pages, newest first, with an opaque cursor that encodes the last id seen."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from pydantic import WithJsonSchema

from core.errors import ValidationFailed

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_CURSOR_LENGTH = 200
# A query's `cursor`: any string passes validation, and the service turns every cursor it did
# not make into the same 400 `invalid-cursor`; the document says what ours look like.
Cursor = Annotated[
    str | None,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]*$",
            "maxLength": MAX_CURSOR_LENGTH,
            "description": "`nextCursor` of the previous page, as it was returned.",
        }
    ),
]
# Ids are 32-bit INTEGER columns: a larger id names no row, and PostgreSQL refuses to compare.
MAX_ROW_ID = 2**31 - 1


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows and the cursor of the next page (None on the last)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(before: int) -> str:
    """Return the opaque cursor of the page after the row with id `before`."""
    raw = json.dumps({"before": before}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Return the id a cursor of ours encodes; anything else is 400 `invalid-cursor`."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError(cursor)
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        before = data["before"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        before = None
    if not isinstance(before, int) or isinstance(before, bool) or not 1 <= before <= MAX_ROW_ID:
        raise ValidationFailed(
            "cursor is not one this API returned",
            code="invalid-cursor",
            errors=[{"field": "cursor", "message": "invalid cursor"}],
        )
    return before


def newest_first(
    session: Session,
    query: sa.Select[T],
    id_column: InstrumentedAttribute[int],
    *,
    limit: int,
    cursor: str | None,
) -> Page[T]:
    """Run `query` for one page, newest (highest id) first, after `cursor` when given."""
    if cursor:
        query = query.where(id_column < decode_cursor(cursor))
    rows: list[Any] = list(session.scalars(query.order_by(id_column.desc()).limit(limit + 1)))
    items = rows[:limit]
    next_cursor = encode_cursor(_id_of(items[-1], id_column)) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def _id_of(row: Any, id_column: InstrumentedAttribute[int]) -> int:
    value: int = getattr(row, id_column.key)
    return value
