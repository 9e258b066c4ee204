"""The Flask receiver: the join.me-compatible API, the event ingest and the pages."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import Flask

from core.config import Settings
from core.db import make_engine, make_session_factory
from receiver import db, errors, http_metrics, limits, request_ids
from receiver.tasks import CeleryEnqueuer, Enqueue, publisher

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    enqueue: Enqueue | None = None,
) -> Flask:
    """Create and configure an instance of the receiver."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["meetinghooks.settings"] = settings
    app.extensions["meetinghooks.enqueue"] = enqueue or CeleryEnqueuer(settings)
    # Each request's commit sends the wake-ups its services noted (core.wakeups).
    app.extensions["meetinghooks.session_factory"] = db.publishing_factory(
        session_factory or make_session_factory(make_engine(settings.database_url)),
        publisher(app),
    )
    logging.getLogger("receiver").setLevel(settings.log_level)

    request_ids.install(app)  # first: the limiter's hooks may log or answer
    db.init_app(app)
    errors.register_error_handlers(app)
    limits.install(app, settings)
    http_metrics.install(app)

    from receiver import openapi, ops, pages  # noqa: PLC0415  (blueprints import the app's helpers)
    from receiver.api import (  # noqa: PLC0415
        alerts,
        analytics,
        events,
        meetings,
        timeline,
        users,
        webhooks,
    )

    for module in (
        ops,
        openapi,
        meetings,
        timeline,
        users,
        events,
        webhooks,
        analytics,
        alerts,
        pages,
    ):
        app.register_blueprint(module.bp)
    from receiver import console  # noqa: PLC0415  (its pages import the app's helpers)

    console.init_app(app, settings)
    return app


def get_settings() -> Settings:
    """Return the settings of the current app."""
    from flask import current_app  # noqa: PLC0415

    settings: Settings = current_app.extensions["meetinghooks.settings"]
    return settings
