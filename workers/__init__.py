"""Celery workers: thin tasks over core.services."""
