"""Loading a policy snapshot from the database, and keeping one fresh per process.

`PolicyCache.refresh` reads the policy version at the start of each gate call
and reloads when it moved: only the grants of the people a change named when
it can, the whole snapshot otherwise (see docs/architecture.md, Decisions).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import signals
from ..clock import Clock, system_clock
from ..store import Txn
from ..store.models import Grant, Role, RoleParent, RolePermission, User
from ..store.stamp import TRUST_S
from .catalogue import PERMISSIONS
from .snapshot import FOREVER, PARTIAL_RELOAD_MAX, GrantSpec, Policy, RoleSpec
from .versions import changed_users, read_policy_version

log = logging.getLogger("rbac_core.policy")


def load_roles(session: Session) -> list[RoleSpec]:
    """Every role with its permissions and parents: the part of a snapshot that is small."""
    perms: dict[str, set[str]] = {}
    for role_name, perm in session.execute(select(RolePermission.role, RolePermission.permission)):
        if perm in PERMISSIONS:
            perms.setdefault(role_name, set()).add(perm)
        else:
            # Only possible if the catalogue shrank under existing data: it grants nothing.
            log.warning("role %s holds %s, which is not in the catalogue", role_name, perm)
    parents: dict[str, list[str]] = {}
    for role_name, parent in session.execute(select(RoleParent.role, RoleParent.parent)):
        parents.setdefault(role_name, []).append(parent)
    return [
        RoleSpec(
            name=name,
            permissions=frozenset(perms.get(name, ())),
            parents=tuple(sorted(parents.get(name, ()))),
            requires_2fa=requires_2fa,
            builtin=builtin,
            description=description,
        )
        for name, requires_2fa, builtin, description in session.execute(
            select(Role.name, Role.requires_2fa, Role.builtin, Role.description)
        )
    ]


def load_policy(session: Session, *, version: int, clock: Clock = system_clock) -> Policy:
    """Read roles and every unrevoked grant of an active user into a new snapshot.

    Expired grants are loaded too: they never allow anything, but they let a
    denial say "your grant expired" instead of "you have no grant".
    """
    return Policy(load_roles(session), load_grants(session), version=version, clock=clock)


def load_grants(session: Session, users: Iterable[str] | None = None) -> list[GrantSpec]:
    """Every unrevoked grant of an active user, or only those of `users`."""
    query = (
        select(
            Grant.id,
            Grant.user_id,
            Grant.role,
            Grant.scope,
            Grant.expires_at,
            Grant.granted_by,
            Grant.reason,
        )
        .join(User, User.id == Grant.user_id)
        .where(Grant.revoked_at.is_(None), User.active.is_(True))
    )
    if users is not None:
        query = query.where(Grant.user_id.in_(sorted(users)))
    return [
        GrantSpec(
            id=gid,
            user=user,
            role=role,
            scope=scope,
            expires_at=FOREVER if expires is None else expires.timestamp(),
            granted_by=granted_by,
            reason=reason,
        )
        for gid, user, role, scope, expires, granted_by, reason in session.execute(query)
    ]


class PolicyCache:
    """Holds the current snapshot for a process and reloads it when the version moves.

    `refresh` costs one indexed single-row read, done once per gate call; that
    is how a grant changed by another process is visible to the next decision.
    """

    def __init__(self, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._policy: Policy | None = None
        self._lock = threading.Lock()
        self.full_reloads = 0  # counted for tests and benchmarks
        self.partial_reloads = 0
        self._trusted: tuple[int, Policy, float] | None = None
        self.trust_clock: Callable[[], float] = time.monotonic
        """Times a snapshot's trust (store/stamp.py TRUST_S); tests stop it."""

    def trusted(self, stamp: int) -> Policy | None:
        """The snapshot last read while the policy stamp said `stamp`, if it still says so
        and that read is under TRUST_S old (store/stamp.py); else None: read the version."""
        found = self._trusted
        if found is None or found[0] != stamp or self.trust_clock() - found[2] >= TRUST_S:
            return None
        return found[1]

    def trust(self, stamp: int, policy: Policy) -> None:
        """`policy` was read after the stamp said `stamp`: fresh for as long as it says so."""
        self._trusted = (stamp, policy, self.trust_clock())

    def refresh(self, txn: Txn, version: int | None = None) -> Policy:
        """The snapshot for `version`, read from `txn` unless the caller just read it.

        A snapshot a few versions behind whose changes all named their people
        (assign, revoke, deactivate, approve) reloads only those people's
        grants; anything else reloads the whole policy.
        """
        if version is None:
            version = read_policy_version(txn)
        policy = self._policy
        if policy is not None and policy.version == version:
            return policy
        with self._lock:
            policy = self._policy
            if policy is not None and policy.version == version:
                return policy
            users = (
                changed_users(txn, policy.version, version, PARTIAL_RELOAD_MAX)
                if policy is not None and policy.version < version
                else None
            )
            if policy is not None and users is not None:
                self.partial_reloads += 1
                policy = policy.with_grants_of(users, load_grants(txn.session, users), version)
                signals.policy_reloaded.send("partial")
            else:
                self.full_reloads += 1
                policy = load_policy(txn.session, version=version, clock=self._clock)
                signals.policy_reloaded.send("full")
            self._policy = policy
            return policy
