"""Who acts, and from where: the surfaces, and the system's own actors, defined once.

A person acts under their Slack user id today (linked WhatsApp identities
come with the WhatsApp surface). The system acts under two names: the
`operator` at the server's command line and the `scheduler`. A system actor
counts as the system only on a system surface: `wa-access console --as U…`
is the command line acting for a person, who gets no system rights.
"""

from __future__ import annotations

from enum import StrEnum


class Surface(StrEnum):
    """Where a request came from; audited with every entry."""

    SLACK = "slack"
    WHATSAPP = "whatsapp"
    API = "api"
    SCHEDULER = "scheduler"
    CLI = "cli"


SURFACES = frozenset(Surface)

OPERATOR = "operator"
"""The actor of the operator's commands at the server's command line (`wa-access …`)."""
SCHEDULER = "scheduler"
"""The actor of scheduled work (the access review, sweeps, checkpoints)."""
SYSTEM_ACTORS = frozenset({OPERATOR, SCHEDULER})
SYSTEM_SURFACES = frozenset({Surface.SCHEDULER, Surface.CLI})


def is_system(actor: str, surface: str) -> bool:
    """The scheduler, or the operator at the server's command line; never a person."""
    return actor in SYSTEM_ACTORS and surface in SYSTEM_SURFACES


def is_operator(actor: str, surface: str) -> bool:
    """The operator at the server's command line, and only there."""
    return actor == OPERATOR and surface == Surface.CLI
