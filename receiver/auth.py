"""Bearer-token authentication and join.me scopes (SPEC 2)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from flask import Response, g, request

from core.services import accounts
from receiver.db import get_session
from receiver.errors import error_response

if TYPE_CHECKING:
    from core.models import User

P = ParamSpec("P")
R = TypeVar("R")
REALM = 'Bearer realm="meetinghooks"'


def _challenge(status: int, error: str, message: str) -> Response:
    code = "invalid-token" if status == 401 else "insufficient-scope"
    return error_response(
        status, code, message, headers={"WWW-Authenticate": f'{REALM}, error="{error}"'}
    )


def require_scope(scope: str) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """Authenticate the bearer token and demand `scope`; sets `g.user`."""

    def decorator(view: Callable[P, R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return _challenge(401, "invalid_token", "missing bearer token")
            found = accounts.authenticate(get_session(), token)
            if found is None:
                return _challenge(401, "invalid_token", "invalid or revoked access token")
            user, record = found
            if scope not in record.scope_set:
                return _challenge(403, "insufficient_scope", f"token lacks the {scope} scope")
            g.user = user
            return view(*args, **kwargs)

        return wrapped

    return decorator


def current_user() -> User:
    """Return the authenticated user of this request."""
    user: User = g.user
    return user
