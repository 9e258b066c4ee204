"""Celery tasks; importing this package registers them all (autodiscovery imports it)."""

from workers.tasks import alerts, deliveries, events

__all__ = ["alerts", "deliveries", "events"]
