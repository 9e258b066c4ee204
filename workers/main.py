"""Worker entry point: `celery -A workers.main worker`."""

from __future__ import annotations

from core.config import Settings
from workers.celery_app import make_celery

app = make_celery(Settings.from_env())
