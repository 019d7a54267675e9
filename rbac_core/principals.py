"""Who acts, and from where: one typed identity for every surface, defined once.

A `Principal` is what the gate decides for, what the audit log records and what
every action sees (`Context.principal`):

- a person: their id in `users` (today their Slack user id), reached through a
  linked `Identity` on the surface they used — a Slack user id now, a WhatsApp
  user id next — so a person is one set of grants however they reach us;
- the system: the `operator` at the server's command line, the `scheduler`, or
  `whatsapp-webhook` (what Meta's signed webhooks tell, processed by a worker);
- an API key (with the HTTP API).

A system principal counts as the system only on a system surface: `wa-access
console --as U…` is the command line acting for a person, who gets no system
rights, and a system name arriving from Slack is nobody in particular.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class Surface(StrEnum):
    """Where a request came from; audited with every entry."""

    SLACK = "slack"
    WHATSAPP = "whatsapp"
    API = "api"
    SCHEDULER = "scheduler"
    CLI = "cli"


SURFACES = frozenset(Surface)
SYSTEM_SURFACES = frozenset({Surface.SCHEDULER, Surface.CLI})


class Kind(StrEnum):
    PERSON = "person"
    SYSTEM = "system"
    API_KEY = "api_key"


class Provider(StrEnum):
    """Where a linked identity lives."""

    SLACK = "slack"
    WHATSAPP = "whatsapp"


@dataclass(frozen=True, slots=True)
class Identity:
    """An account that names a person on one provider (a Slack user id, a WhatsApp user id)."""

    provider: Provider
    external_id: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who acts. `id` is what decisions are made for and what the audit log records."""

    kind: Kind
    id: str
    via: Identity | None = None
    """The linked identity this request came in with, for a person; None otherwise."""

    @staticmethod
    def person(user_id: str, via: Identity | None = None) -> Principal:
        return _person(user_id, via)

    @staticmethod
    def slack_user(slack_user_id: str) -> Principal:
        """A person as Slack names them: their Slack user id is their id here too."""
        return _slack_user(slack_user_id)

    def is_system_on(self, surface: str) -> bool:
        """The scheduler, or the operator at the server's command line; never a person.
        Meta's webhooks count as the system only on the WhatsApp surface."""
        if self.kind is not Kind.SYSTEM:
            return False
        if self.id == WEBHOOK_ID:
            return surface == Surface.WHATSAPP
        return surface in SYSTEM_SURFACES

    def is_operator_on(self, surface: str) -> bool:
        """The operator at the server's command line, and only there."""
        return self.kind is Kind.SYSTEM and self.id == OPERATOR_ID and surface == Surface.CLI

    def __str__(self) -> str:
        return self.id


# Immutable, so the same person is made once: every Slack request names its sender, and
# building a frozen dataclass costs as much as a cached lookup ten times over.
@lru_cache(maxsize=4096)
def _person(user_id: str, via: Identity | None) -> Principal:
    return Principal(Kind.PERSON, user_id, via)


@lru_cache(maxsize=4096)
def _slack_user(slack_user_id: str) -> Principal:
    return Principal(Kind.PERSON, slack_user_id, Identity(Provider.SLACK, slack_user_id))


OPERATOR_ID = "operator"
OPERATOR = Principal(Kind.SYSTEM, OPERATOR_ID)
"""Who acts in the operator's commands at the server's command line (`wa-access …`)."""
SCHEDULER = Principal(Kind.SYSTEM, "scheduler")
"""Who acts in scheduled work (the access review, sweeps, checkpoints)."""
WEBHOOK_ID = "whatsapp-webhook"
WEBHOOK = Principal(Kind.SYSTEM, WEBHOOK_ID)
"""Who acts when a worker processes what Meta's signed webhooks said (customers writing,
statuses, template reviews): the system, on the WhatsApp surface only."""
_SYSTEM = {p.id: p for p in (OPERATOR, SCHEDULER, WEBHOOK)}


def principal_for(actor: Principal | str) -> Principal:
    """A principal as given, or the one a plain name stands for: a system actor's name
    is that system principal (it counts as the system only on a system surface), any
    other name a person with that id."""
    if isinstance(actor, Principal):
        return actor
    return _SYSTEM.get(actor) or Principal.person(actor)


def trusted(actor: object) -> Principal | None:
    """The principal the gate acts for, or None for anything it must not trust.

    Only a `Principal` itself (no subclass that could answer `is_system_on` its own
    way), with a plain `str` id and a real `Kind`, and of kind system only if it is
    `OPERATOR`, `SCHEDULER` or `WEBHOOK`; or a plain `str`, read by `principal_for`.
    """
    if type(actor) is str:
        return principal_for(actor)
    if type(actor) is not Principal or type(actor.id) is not str:
        return None
    if type(actor.kind) is not Kind or (actor.via is not None and type(actor.via) is not Identity):
        return None
    if actor.kind is Kind.SYSTEM and _SYSTEM.get(actor.id) != actor:
        return None
    return actor
