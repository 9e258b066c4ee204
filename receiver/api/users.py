"""GET /v1/user: the account behind the token (SPEC 4)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from core.services import meetings
from core.validation import isoformat
from receiver import get_settings
from receiver.auth import current_user, require_scope
from receiver.db import get_session

bp = Blueprint("users", __name__, url_prefix="/v1")


@bp.get("/user")
@require_scope("user_info")
def me() -> Response:
    """Describe the current user."""
    user = current_user()
    base_url = get_settings().base_url
    return jsonify(
        {
            "email": user.email,
            "fullName": user.full_name,
            "personalUrl": f"{base_url}/{user.personal_url}" if user.personal_url else None,
            "registrationDate": isoformat(user.registration_date),
            "numberOfMeetingsHosted": meetings.count_hosted(get_session(), user),
            "conferenceSettings": {
                "defaultViewerMode": "default",
                "viewerAppDetection": True,
                "conferenceCallNumbersUrl": f"{base_url}/audio/numbers",
            },
        }
    )
