"""The database schema, as SQLAlchemy 2.x typed ORM classes, one module per part.

Alembic migrations under `store/migrations/` create these tables; nothing in a
production path calls `create_all`.
"""

from .audit import AuditEntry, AuditHead
from .base import Base, UTCDateTime
from .bookkeeping import InboundEvent, InboundWebhook, JobRun, OutboxMessage, OutboxPace
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
    "Grant",
    "InboundEvent",
    "InboundWebhook",
    "JobRun",
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
    "UTCDateTime",
    "User",
    "UserActivity",
]
