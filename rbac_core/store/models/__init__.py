"""The database schema, as SQLAlchemy 2.x typed ORM classes, one module per part.

Alembic migrations under `store/migrations/` create these tables; nothing in a
production path calls `create_all`.
"""

from .audit import AuditEntry, AuditHead
from .base import Base, UTCDateTime
from .bookkeeping import (
    InboundEvent,
    InboundWebhook,
    JobRun,
    OutboxMessage,
    OutboxPace,
    SendSlot,
)
from .messaging import (
    Conversation,
    ConversationMessage,
    Customer,
    MessageStatus,
    TemplateEvent,
    UnknownNumber,
)
from .people import ActivityRollup, Number, SecondFactor, User, UserActivity
from .policy import Grant, PolicyChange, PolicyState, Role, RoleParent, RolePermission
from .work import AccessRequest, AccessReview, PendingAction, ReviewFinding, ReviewKeep

__all__ = [
    "AccessRequest",
    "AccessReview",
    "ActivityRollup",
    "AuditEntry",
    "AuditHead",
    "Base",
    "Conversation",
    "ConversationMessage",
    "Customer",
    "Grant",
    "InboundEvent",
    "InboundWebhook",
    "JobRun",
    "MessageStatus",
    "Number",
    "OutboxMessage",
    "OutboxPace",
    "PendingAction",
    "PolicyChange",
    "PolicyState",
    "ReviewFinding",
    "ReviewKeep",
    "Role",
    "RoleParent",
    "RolePermission",
    "SecondFactor",
    "SendSlot",
    "TemplateEvent",
    "UTCDateTime",
    "UnknownNumber",
    "User",
    "UserActivity",
]
