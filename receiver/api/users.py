"""GET /v1/user: the account behind the token (SPEC 4)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from core.responses import UserOut
from core.services import meetings
from receiver import get_settings
from receiver.auth import current_user
from receiver.db import get_session
from receiver.openapi import operation

bp = Blueprint("users", __name__, url_prefix="/v1")


@bp.get("/user")
@operation({200: (UserOut, "The current user.")}, scope="user_info")
def me() -> Response:
    """Describe the current user."""
    user = current_user()
    base_url = get_settings().base_url
    return jsonify(UserOut.of(user, meetings.count_hosted(get_session(), user), base_url).render())
