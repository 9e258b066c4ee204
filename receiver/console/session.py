"""Signing in with an access token and signing out."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from flask import Response, flash, g, redirect, request, session, url_for

from core.services import accounts
from receiver.console import bp
from receiver.console.forms import SignInForm, safe_next
from receiver.console.guard import SIGNED_IN_AT, TOKEN_ID
from receiver.console.render import page
from receiver.db import get_session

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse


@bp.get("")
def home() -> BaseResponse:
    """Send a visitor to the meetings (or, signed out, to the sign-in page)."""
    return redirect(url_for("console.meetings"))


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Response | BaseResponse:
    """Show the sign-in form; with a live token, start a session holding the token's id."""
    form = SignInForm(next=request.args.get("next", ""))
    if g.session_ended:
        flash(g.session_ended, "error")
    if form.validate_on_submit():
        found = accounts.authenticate(get_session(), (form.token.data or "").strip())
        if found is not None:
            _, record = found
            # A fresh session: nothing from before signing in (a CSRF token included) carries over.
            session.clear()
            session[TOKEN_ID] = record.id
            session[SIGNED_IN_AT] = int(time.time())
            return redirect(safe_next(form.next.data, url_for("console.meetings")))
        form.token.errors = ["This access token is unknown or revoked."]
        return page("console/sign_in.html", 401, title="Sign in", form=form)
    return page("console/sign_in.html", title="Sign in", form=form)


@bp.post("/sign-out")
def sign_out() -> BaseResponse:
    """End the session (the CSRF check already ran in the guard)."""
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("console.sign_in"))
