"""All mapped models; importing this package registers every table on `core.db.metadata`."""

from core.models.accounts import SCOPES, AccessToken, User
from core.models.alerts import Alert, AlertRule, AlertType
from core.models.events import Delivery, DeliveryAttempt, Event, HostSlot
from core.models.meetings import EVENT_TYPES, Meeting, PresenterLink, Webhook
from core.models.replays import DeliveryReplay

__all__ = [
    "EVENT_TYPES",
    "SCOPES",
    "AccessToken",
    "Alert",
    "AlertRule",
    "AlertType",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryReplay",
    "Event",
    "HostSlot",
    "Meeting",
    "PresenterLink",
    "User",
    "Webhook",
]
