"""The five built-in roles of SPEC §3.

They are owned by code, not by users: `sync_builtin_roles` makes the database
match these definitions at migrate time, and the role service refuses to edit
or delete them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalogue import PERMISSIONS, check_permissions


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    description: str
    permissions: frozenset[str]
    parents: tuple[str, ...] = ()
    requires_2fa: bool = False


ADMIN = "admin"

_EVERYONE = {"templates:view", "roles:view"}
_FRONT_LINE = _EVERYONE | {
    "messages:send_template",
    "conversations:view_assigned",
    "conversations:reply",
    "escalations:create",
    "customers:view",
    "chatbots:use",
}

BUILTIN_ROLES: dict[str, RoleDefinition] = {
    d.name: d
    for d in (
        RoleDefinition(
            ADMIN,
            "Full control of the workspace, its people and its numbers",
            PERMISSIONS,
            requires_2fa=True,
        ),
        RoleDefinition(
            "agent",
            "Handles customer conversations and escalations",
            check_permissions(
                _FRONT_LINE
                | {
                    "messages:send_text",
                    "messages:send_media",
                    "messages:send_interactive",
                    "escalations:resolve",
                    "customers:view_pii",
                }
            ),
        ),
        RoleDefinition(
            "developer",
            "Integrations, webhooks, API keys and Graph API debugging",
            check_permissions(
                _EVERYONE
                | {
                    "integrations:manage",
                    "webhooks:manage",
                    "automations:manage",
                    "api:debug",
                    "apikeys:manage",
                }
            ),
            requires_2fa=True,
        ),
        RoleDefinition(
            "analyst",
            "Analytics, reports and chatbot monitoring",
            check_permissions(
                _EVERYONE | {"chatbots:monitor", "analytics:view", "reports:generate"}
            ),
        ),
        RoleDefinition(
            "support",
            "Assigned conversations with pre-approved templates only",
            check_permissions(_FRONT_LINE),
        ),
    )
}
