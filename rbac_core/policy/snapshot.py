"""Compiled policy: who holds which permission in which scope, answered in microseconds.

A `Policy` is an immutable snapshot of roles and live grants with every role's
inheritance closure precomputed. Decisions are memoised per snapshot; a change
of roles or grants produces a new snapshot (see `PolicyCache`), so the memo never
needs invalidating entry by entry. Expiry is the one thing that changes without
a write, so every memoised allow carries the instant it stops being true.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ..clock import Clock, system_clock
from ..errors import UnknownPermission
from ..values import WILDCARD, format_moment, scope_text
from . import relations
from .catalogue import PERMISSIONS, check_permission
from .relations import Resource

FOREVER = float("inf")
MEMO_LIMIT = 32_768
"""Decisions one snapshot memoises before it starts again. Each costs about 350 bytes
(mostly a denial's reason, written out for the person who asked), so a full memo is
about 11 MiB per process: 45 MiB for four gunicorn workers. A miss costs a few
microseconds; `python -m bench --only engines` reports both."""
PARTIAL_RELOAD_MAX = 1000
"""More people changed than this since a snapshot: reloading everything is as quick."""


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    permissions: frozenset[str]
    parents: tuple[str, ...] = ()
    requires_2fa: bool = False
    builtin: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class GrantSpec:
    id: int
    user: str
    role: str
    scope: str
    expires_at: float = FOREVER
    granted_by: str = ""
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow or deny, with the reason a person can read."""

    allowed: bool
    user: str
    permission: str
    scope: str
    reason: str
    grant_id: int | None = None
    role: str | None = None
    via: tuple[str, ...] = ()
    valid_until: float = field(default=FOREVER, compare=False)
    code: str | None = None
    """Set when a relation rule refused (relations.py): the rule's error code..."""
    refusal: str | None = field(default=None, compare=False)
    """...and what the actor is told."""


def role_closure(roles: Mapping[str, RoleSpec]) -> dict[str, dict[str, tuple[str, ...]]]:
    """For each role, each permission it reaches and the shortest inheritance path to it.

    Breadth-first with a visited set, so even a cycle that slipped into the data
    terminates instead of hanging the decision point.
    """
    closure: dict[str, dict[str, tuple[str, ...]]] = {}
    for name in roles:
        reached: dict[str, tuple[str, ...]] = {}
        frontier: list[tuple[str, tuple[str, ...]]] = [(name, (name,))]
        seen = {name}
        while frontier:
            next_frontier: list[tuple[str, tuple[str, ...]]] = []
            for role_name, path in frontier:
                spec = roles.get(role_name)
                if spec is None:
                    continue
                for perm in spec.permissions:
                    reached.setdefault(perm, path)
                for parent in spec.parents:
                    if parent not in seen:
                        seen.add(parent)
                        next_frontier.append((parent, (*path, parent)))
            frontier = next_frontier
        closure[name] = reached
    return closure


def _by_user(grants: Iterable[GrantSpec]) -> dict[str, tuple[GrantSpec, ...]]:
    """Grants grouped by holder, each group in grant order."""
    grouped: dict[str, list[GrantSpec]] = {}
    for grant in grants:
        grouped.setdefault(grant.user, []).append(grant)
    return {user: tuple(sorted(held, key=lambda g: g.id)) for user, held in grouped.items()}


class Policy:
    """An immutable snapshot of roles and grants, with memoised decisions."""

    def __init__(
        self,
        roles: Iterable[RoleSpec],
        grants: Iterable[GrantSpec],
        *,
        version: int = 0,
        clock: Clock = system_clock,
        catalogue: frozenset[str] = PERMISSIONS,
    ) -> None:
        self.version = version
        self.catalogue = catalogue
        self.roles: dict[str, RoleSpec] = {r.name: r for r in roles}
        self.closure = role_closure(self.roles)
        self.grants_by_user: dict[str, tuple[GrantSpec, ...]] = _by_user(grants)
        self._clock = clock
        self._memo: dict[tuple[str, str, str], Decision] = {}
        self._memo_lock = threading.Lock()

    def with_grants_of(
        self, users: Iterable[str], grants: Iterable[GrantSpec], version: int
    ) -> Policy:
        """A new snapshot at `version`: these users' grants replaced by `grants`,
        everything else (roles, other people's grants) shared with this one."""
        derived = Policy.__new__(Policy)
        derived.version = version
        derived.catalogue = self.catalogue
        derived.roles = self.roles
        derived.closure = self.closure
        by_user = dict(self.grants_by_user)
        for user in users:
            by_user.pop(user, None)
        by_user.update(_by_user(grants))
        derived.grants_by_user = by_user
        derived._clock = self._clock
        derived._memo = {}
        derived._memo_lock = threading.Lock()
        return derived

    def decide(self, user: str, permission: str, scope: str = WILDCARD) -> Decision:
        """Allow or deny `user` the `permission` in `scope`, with the reason.

        The fast path is one dict probe and one clock read; everything else is
        in `_decide_uncached`.
        """
        hit = self._memo.get((user, permission, scope))
        if hit is not None and hit.valid_until > self._clock():
            return hit
        return self._decide_uncached(user, permission, scope)

    def decide_on(self, user: str, permission: str, scope: str, resource: Resource) -> Decision:
        """`decide`, then the relation rules about `resource` (relations.py): the grants
        say what someone may do somewhere, the rules what they may do to this thing."""
        decision = self.decide(user, permission, scope)
        if not decision.allowed:
            return decision
        broken = relations.check(
            resource, user, permission, lambda other: self.decide(user, other, scope).allowed
        )
        if broken is None:
            return decision
        return replace(
            decision,
            allowed=False,
            reason=broken.reason,
            code=broken.code,
            refusal=broken.refusal,
            valid_until=FOREVER,
        )

    def _decide_uncached(self, user: str, permission: str, scope: str) -> Decision:
        if permission not in self.catalogue:
            check_permission(permission)  # raises UnknownPermission with a hint
            raise UnknownPermission(f"unknown permission '{permission}'")
        decision = self._compute(user, permission, scope, self._clock())
        with self._memo_lock:
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[(user, permission, scope)] = decision
        return decision

    def _compute(self, user: str, permission: str, scope: str, now: float) -> Decision:
        grants = self.grants_by_user.get(user, ())
        best: GrantSpec | None = None
        best_key: tuple[float, bool, int] | None = None
        expired: list[GrantSpec] = []
        elsewhere: list[GrantSpec] = []
        for grant in grants:
            if permission not in self.closure.get(grant.role, {}):
                continue
            if grant.scope != WILDCARD and grant.scope != scope:
                elsewhere.append(grant)
                continue
            if grant.expires_at <= now:
                expired.append(grant)
                continue
            # Prefer the grant that stays valid longest, then the most specific.
            key = (grant.expires_at, grant.scope == scope, -grant.id)
            if best_key is None or key > best_key:
                best, best_key = grant, key
        if best is not None:
            path = self.closure[best.role][permission]
            via = f" (inherited through {' -> '.join(path)})" if len(path) > 1 else ""
            until = (
                "" if best.expires_at == FOREVER else f", until {format_moment(best.expires_at)}"
            )
            return Decision(
                True,
                user,
                permission,
                scope,
                f"allowed by grant #{best.id}: role '{best.role}'{via} "
                f"in {scope_text(best.scope)}{until}",
                grant_id=best.id,
                role=best.role,
                via=path,
                valid_until=best.expires_at,
            )
        return Decision(
            False,
            user,
            permission,
            scope,
            self._why_not(user, permission, scope, grants, expired, elsewhere),
        )

    @staticmethod
    def _why_not(
        user: str,
        permission: str,
        scope: str,
        grants: tuple[GrantSpec, ...],
        expired: list[GrantSpec],
        elsewhere: list[GrantSpec],
    ) -> str:
        if not grants:
            return f"{user} has no grants, and access is denied by default"
        if expired:
            g = max(expired, key=lambda e: e.expires_at)
            return (
                f"denied: grant #{g.id} (role '{g.role}') would allow {permission} "
                f"but expired at {format_moment(g.expires_at)}"
            )
        if elsewhere:
            scopes = ", ".join(sorted({g.scope for g in elsewhere}))
            return f"denied: {permission} is granted only for {scopes}, not for {scope_text(scope)}"
        held = ", ".join(sorted({g.role for g in grants}))
        return f"denied: none of {user}'s roles ({held}) includes {permission}"

    def permissions_of_role(self, role: str) -> frozenset[str]:
        return frozenset(self.closure.get(role, {}))

    def ancestors(self, role: str) -> frozenset[str]:
        """The role and every role it inherits from, directly or not."""
        stack, seen = [role], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            spec = self.roles.get(name)
            if spec is not None:
                stack.extend(spec.parents)
        return frozenset(seen)

    def requires_2fa(self, role: str) -> bool:
        """True if the role or any role it inherits from requires 2FA.

        Inherited, or a custom role that merely inherits admin would hand out
        admin's power without the second factor admin itself demands.
        """
        return any(
            spec.requires_2fa
            for spec in (self.roles.get(name) for name in self.ancestors(role))
            if spec is not None
        )

    def roles_held(self, user: str) -> frozenset[str]:
        """Every role the user holds now, directly or through inheritance, in any scope."""
        held: set[str] = set()
        for grant in self.live_grants(user):
            held |= self.ancestors(grant.role)
        return frozenset(held)

    def live_grants(self, user: str) -> list[GrantSpec]:
        now = self._clock()
        return [g for g in self.grants_by_user.get(user, ()) if g.expires_at > now]

    def effective_permissions(self, user: str) -> dict[str, frozenset[str]]:
        """Scope -> permissions the user holds there now (global ones count everywhere)."""
        result: dict[str, set[str]] = {}
        for grant in self.live_grants(user):
            result.setdefault(grant.scope, set()).update(self.closure.get(grant.role, {}))
        global_perms = result.get(WILDCARD, set())
        return {
            scope: frozenset(perms | global_perms) if scope != WILDCARD else frozenset(perms)
            for scope, perms in result.items()
        }

    def missing_permissions(self, user: str, wanted: Iterable[str], scope: str) -> set[str]:
        """Which of `wanted` the user does not hold in `scope` (for escalation checks)."""
        return {p for p in wanted if not self.decide(user, p, scope).allowed}
