"""Errors the core raises when it refuses something.

Every refusal carries a message written for the person who asked, and an exit
code in the CLI convention of SPEC §9 (1 refused/failed, 2 usage error), so that
each surface can render it without knowing which rule fired.
"""

from __future__ import annotations


class RbacError(Exception):
    """Base of every refusal the core makes on purpose."""

    exit_code = 1
    code = "refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RbacError):
    """The request is malformed: the caller should fix what they typed."""

    exit_code = 2
    code = "invalid_input"


class MalformedNumber(InvalidInput):
    code = "malformed_number"


class MalformedDuration(InvalidInput):
    code = "malformed_duration"


class MalformedUserId(InvalidInput):
    code = "malformed_user"


class MalformedRoleName(InvalidInput):
    code = "malformed_role_name"


class NotFound(RbacError):
    """Something named in the request does not exist."""

    code = "not_found"


class UnknownRole(NotFound):
    code = "unknown_role"


class UnknownPermission(NotFound):
    code = "unknown_permission"


class UnknownUser(NotFound):
    code = "unknown_user"


class UnknownNumber(NotFound):
    code = "unknown_number"


class UnknownGrant(NotFound):
    code = "unknown_grant"


class Conflict(RbacError):
    """The request contradicts the current state."""

    code = "conflict"


class DuplicateGrant(Conflict):
    code = "duplicate_grant"


class DuplicateRole(Conflict):
    code = "duplicate_role"


class RoleInUse(Conflict):
    code = "role_in_use"


class AdminExists(Conflict):
    code = "admin_exists"


class BuiltinRoleImmutable(Conflict):
    code = "builtin_role"


class RoleCycle(Conflict):
    code = "role_cycle"


class Forbidden(RbacError):
    """A rule of SPEC §4 forbids the action, whoever asks."""

    code = "forbidden"


class PermissionDenied(Forbidden):
    code = "permission_denied"


class PrivilegeEscalation(Forbidden):
    code = "privilege_escalation"


class SelfGrant(Forbidden):
    code = "self_grant"


class OperatorOnly(Forbidden):
    """Actions for the operator at the server's command line, never for a chat surface."""

    code = "operator_only"


class TwoFactorRequired(Forbidden):
    code = "2fa_required"


class LastAdmin(Forbidden):
    code = "last_admin"


class PendingActionError(RbacError):
    """A confirmation that cannot be honoured: expired, used, or not yours."""

    code = "pending_action"


class PolicyNotAnnounced(RbacError):
    """Policy cannot change now: the other processes of this machine could not be told
    (store/stamp.py), and would go on deciding on the old policy."""

    code = "policy_stamp_unavailable"
