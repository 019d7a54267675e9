"""The closed permission catalogue of SPEC §3.

A permission outside this catalogue is an error wherever it appears, so a typo
in a role definition can never silently grant or withhold access.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import UnknownPermission

CATALOGUE: dict[str, str] = {
    "numbers:manage": "Manage phone numbers and account preferences",
    "templates:view": "View message templates",
    "templates:create": "Draft message templates",
    "templates:edit": "Edit message templates",
    "templates:approve": "Approve templates internally and submit them to Meta",
    "messages:send_template": "Send approved template messages",
    "messages:send_text": "Send free-form text inside the 24-hour window",
    "messages:send_media": "Send media inside the 24-hour window",
    "messages:send_interactive": "Send interactive messages inside the 24-hour window",
    "conversations:view_assigned": "View conversations assigned to you",
    "conversations:reply": "Reply to conversations",
    "conversations:view_all": "View every conversation",
    "conversations:assign": "Assign conversations to people",
    "escalations:create": "Escalate a conversation",
    "escalations:resolve": "Approve or resolve escalations",
    "customers:view": "View customers (phone numbers masked)",
    "customers:view_pii": "View customers' full phone numbers",
    "customers:export": "Export customer data",
    "customers:erase": "Erase customer data",
    "chatbots:use": "Use chatbots",
    "chatbots:monitor": "Monitor chatbot interactions",
    "analytics:view": "View delivery and read analytics",
    "reports:generate": "Generate reports",
    "integrations:manage": "Manage integrations",
    "webhooks:manage": "Manage webhook settings",
    "automations:manage": "Manage automations",
    "api:debug": "Test and debug the Graph API configuration",
    "apikeys:manage": "Create and revoke API keys",
    "billing:manage": "Manage billing",
    "usage:view": "View usage figures",
    "roles:view": "View roles and other people's grants",
    "roles:assign": "Assign and revoke roles",
    "roles:manage": "Create, edit and delete custom roles",
    "access:approve": "Approve access requests",
    "audit:view": "View the audit log",
    "audit:run": "Run access audits",
    "audit:export": "Export the audit log",
    "security:reset_2fa": "Reset someone's two-factor authentication",
}

PERMISSIONS: frozenset[str] = frozenset(CATALOGUE)


def check_permission(name: str) -> str:
    """Return the permission if it is in the catalogue, else raise UnknownPermission."""
    if name in PERMISSIONS:
        return name
    hint = ""
    resource = name.split(":", 1)[0]
    related = sorted(p for p in PERMISSIONS if p.startswith(resource + ":"))
    if related:
        hint = f" (did you mean one of: {', '.join(related)}?)"
    raise UnknownPermission(f"unknown permission '{name}'{hint}")


def check_permissions(names: Iterable[str]) -> frozenset[str]:
    return frozenset(check_permission(n) for n in names)


SENSITIVE_PERMISSIONS: frozenset[str] = frozenset(
    {
        # SPEC §4 rule 8: managing API keys, exporting or erasing customer data,
        # resetting 2FA, changing numbers or billing.
        "apikeys:manage",
        "customers:export",
        "customers:erase",
        "security:reset_2fa",
        "numbers:manage",
        "billing:manage",
    }
)
