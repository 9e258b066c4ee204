"""WSGI entry point for gunicorn: `receiver.wsgi:app`."""

from core import logs
from core.config import Settings
from receiver import create_app

settings = Settings.from_env()
# The app's lines (and every library's) in LOG_FORMAT, as gunicorn's own (access_log.py).
logs.configure(settings.log_format, settings.log_level)
app = create_app(settings)
