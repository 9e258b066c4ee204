"""The names of the workers' tasks: the one place a caller spells them."""

from __future__ import annotations

PROCESS_EVENT = "workers.events.process_event"
PROCESS_EVENTS = "workers.events.process_events"
DELIVER = "workers.deliveries.deliver"
SWEEP_INBOX = "workers.sweep.sweep_inbox"
SWEEP_DELIVERIES = "workers.sweep.sweep_deliveries"
SWEEP_ALERTS = "workers.sweep.sweep_alerts"
