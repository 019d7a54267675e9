"""Relations in decisions: rules that depend on who a resource belongs to.

A grant says what someone may do *somewhere*; some rules say what they may do
*to this thing*, whoever granted what: the requester of access cannot decide
their own request, the author of a template cannot approve it (SPEC §4 rule
7), nobody hands themselves a role. They are written once, here, as data:
each `RelationRule` binds a kind of resource and a permission to a relation
the actor must not hold (`not`) or must hold (`be`, unless a permission lifts
it, as "the assignee replies, unless they may reply to any conversation").
`Policy.decide(..., resource=...)` applies them after the grants, so the
gate's one decision covers both, and `/wa-role why` explains either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Resource:
    """What an action acts on, and the people related to it (relation -> user id)."""

    kind: str
    id: str
    relations: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind.replace('_', ' ')} {self.id}"


@dataclass(frozen=True)
class RelationRule:
    kind: str
    permission: str
    relation: str
    must: Literal["not", "be"]
    code: str
    refusal: str
    """What the actor is told when the rule stops them."""
    reason: str
    """Why, said of anyone (for `why` and the audit log); formatted with {resource}."""
    unless: str | None = None
    """For `be` rules: a permission whose holder is exempt (e.g. reply to any conversation)."""


RULES: tuple[RelationRule, ...] = (
    RelationRule(
        "access_request",
        "access:approve",
        "requester",
        "not",
        "separation_of_duties",
        "You cannot decide on this request: you asked for it yourself, so someone else "
        "must approve it.",
        "the requester of {resource} cannot decide it (separation of duties)",
    ),
    RelationRule(
        "grant",
        "roles:assign",
        "holder",
        "not",
        "self_grant",
        "You cannot give yourself a role: someone else must.",
        "nobody gives themselves a role ({resource})",
    ),
    RelationRule(
        "access_review",
        "audit:run",
        "requester",
        "be",
        "not_your_review",
        "Only whoever asked for this access review (or the scheduler) can build it.",
        "only the requester of {resource} builds it",
    ),
    RelationRule(
        "finding",
        "roles:assign",
        "holder",
        "not",
        "self_grant",
        "You cannot keep your own access: someone else must decide.",
        "the holder of the grant in {resource} cannot keep it themselves",
    ),
)


@dataclass(frozen=True)
class Broken:
    """A relation rule that refuses: its code, what the actor is told, and why."""

    code: str
    refusal: str
    reason: str


def check(
    resource: Resource,
    actor: str,
    permission: str,
    holds: Callable[[str], bool],
    rules: tuple[RelationRule, ...] = RULES,
) -> Broken | None:
    """The first rule for (resource kind, permission) that `actor` breaks, or None.

    `holds(permission)` tells whether the actor holds a permission that lifts a
    `be` rule, in the same scope.
    """
    for rule in rules:
        if rule.kind != resource.kind or rule.permission != permission:
            continue
        related = resource.relations.get(rule.relation)
        broken = related == actor if rule.must == "not" else related != actor
        if broken and rule.must == "be" and rule.unless is not None and holds(rule.unless):
            continue
        if broken:
            return Broken(rule.code, rule.refusal, rule.reason.format(resource=resource.label))
    return None
