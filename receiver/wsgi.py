"""WSGI entry point for gunicorn: `receiver.wsgi:app`."""

from receiver import create_app

app = create_app()
