"""Celery tasks; importing this package registers them all (autodiscovery imports it)."""

from workers.tasks import deliveries, events

__all__ = ["deliveries", "events"]
