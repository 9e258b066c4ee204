"""Every callback of the person, and the Redeliver button."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, flash, redirect, request, url_for

from core.errors import Conflict, ValidationFailed
from core.services import delivery_log
from core.validation import validate
from receiver import get_settings
from receiver.api.webhooks import DeliveryQuery
from receiver.console import bp
from receiver.console.forms import ActionForm, safe_next
from receiver.console.guard import person, signed_in
from receiver.console.render import page
from receiver.db import get_session

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

STATUSES = ("pending", "succeeded", "failed")


@bp.get("/deliveries")
@signed_in("start_meeting")
def deliveries() -> Response:
    """List the person's callbacks, newest first, filterable by status, failed ones marked."""
    args = {k: v for k, v in request.args.items() if v != "" and k in ("status", "cursor")}
    try:
        query = validate(DeliveryQuery, args)
    except ValidationFailed as bad:
        return page(
            "console/deliveries.html",
            400,
            title="Deliveries",
            deliveries=[],
            statuses=STATUSES,
            status="",
            problems=[f"{e['field']}: {e['message']}" for e in bad.errors] or [bad.message],
            next_page=None,
            action=ActionForm(next=request.full_path),
        )
    found = delivery_log.list_deliveries(
        get_session(), person().id, status=query.status, limit=query.limit, cursor=query.cursor
    )
    next_page = (
        url_for("console.deliveries", status=query.status or "", cursor=found.next_cursor)
        if found.next_cursor
        else None
    )
    return page(
        "console/deliveries.html",
        title="Deliveries",
        deliveries=found.items,
        statuses=STATUSES,
        status=query.status or "",
        problems=[],
        next_page=next_page,
        action=ActionForm(next=request.full_path),
    )


@bp.post("/deliveries/<int:delivery_id>/redeliver")
@signed_in("start_meeting")
def redeliver(delivery_id: int) -> BaseResponse:
    """Send a delivery again at once with the same webhook-id, as the API's redeliver does."""
    form = ActionForm()
    back = safe_next(form.next.data, url_for("console.deliveries"))
    session = get_session()
    try:
        delivery_log.redeliver(
            session,
            person().id,
            delivery_id,
            max_attempts=len(get_settings().retry_schedule) + 1,
        )
    except Conflict as refused:
        session.rollback()
        flash(f"Delivery {delivery_id} was not sent again: {refused.message}", "error")
        return redirect(back)
    session.commit()  # publishes its wake-up
    flash(f"Delivery {delivery_id} is being sent again with the same webhook-id.", "info")
    return redirect(back)
