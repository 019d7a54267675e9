"""Properties of the RBAC core, checked on generated inputs with hypothesis.

1. Decisions of a compiled `Policy` agree with a naive reference walk over the
   role graph, whatever the graph (cycles included), the grants and the clock.
2. Granting never gives more than the granter holds, and refusals write nothing.
3. No sequence of revokes or deactivations removes the last active admin.
4. The `/wa-role` parser fails on any text only with a `UsageError`.

The database-backed properties build a fresh, migrated database for every
example (a copy of the SQLite template, or a reset of the PostgreSQL schema of
the session), the same way the `db_url` fixture does.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise, product
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import Phase, assume, event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from handlers.commands.grammar import MAX_TEXT, UsageError, parse
from handlers.commands.roles import COMMAND, SUBCOMMANDS
from rbac_core import Database, Gate, ManualClock, Outcome, build_gate
from rbac_core.audit import GENESIS_HASH
from rbac_core.clock import utcnow
from rbac_core.directory import ensure_user, register_number
from rbac_core.errors import UnknownPermission
from rbac_core.gate import CONFIRMATION_TTL
from rbac_core.policy import FOREVER, Decision, GrantSpec, Policy, RoleSpec, snapshot
from rbac_core.policy.builtin_roles import BUILTIN_ROLES
from rbac_core.policy.catalogue import PERMISSIONS
from rbac_core.policy.grant_rules import active_admins
from rbac_core.policy.versions import bump_policy_version
from rbac_core.store import txn_of
from rbac_core.store.migrate import sync_builtin_roles
from rbac_core.store.models import Grant, Role, RoleParent, RolePermission
from rbac_core.values import WILDCARD

from .conftest import ADMIN, ALICE, BOB, CAROL, START, TABLES
from .conftest import NUMBERS as REGISTERED
from .helpers import AlwaysVerified, run

DAVE = "U0DAVE001"
ERIN = "U0ERIN001"
FRANK = "U0FRANK01"

NOW = START
ALL_PERMISSIONS = tuple(sorted(PERMISSIONS))
SCOPES = (WILDCARD, "+15550000001", "+15550000002", "+15550000003")
NUMBERS = SCOPES[1:]

PURE = settings(max_examples=300, deadline=None)
# The explain phase replays examples many times over once one fails: too slow with a database.
WITH_DATABASE = settings(
    max_examples=25, deadline=None, phases=[p for p in Phase if p is not Phase.explain]
)


# ---------------------------------------------------------------------------
# 1. Pure policy: decisions agree with a naive reference
# ---------------------------------------------------------------------------

ROLE_POOL = (
    "agent",
    "analyst",
    "support",
    "night-shift",
    "team-lead",
    "billing-desk",
    "auditors",
    "read-only",
)
GHOST = "ghost"  # named by parents or grants, never defined
POLICY_USERS = (ALICE, BOB, CAROL, DAVE)
QUERY_SCOPES = (*SCOPES, "+15550000009")


@dataclass(frozen=True)
class World:
    """Roles, grants and the permissions worth asking about."""

    roles: tuple[RoleSpec, ...]
    grants: tuple[GrantSpec, ...]
    asked: tuple[str, ...]

    @property
    def role_map(self) -> dict[str, RoleSpec]:
        return {r.name: r for r in self.roles}

    def policy(self, clock: Callable[[], float]) -> Policy:
        return Policy(self.roles, self.grants, clock=clock)

    def queries(self) -> Iterator[tuple[str, str, str]]:
        return product(POLICY_USERS, self.asked, QUERY_SCOPES)

    def instants(self) -> list[float]:
        """Every expiry at or after NOW, with its floating-point neighbours."""
        moments = {NOW}
        for grant in self.grants:
            if NOW <= grant.expires_at < FOREVER:
                at = grant.expires_at
                moments |= {math.nextafter(at, -math.inf), at, math.nextafter(at, math.inf)}
        return sorted(m for m in moments if m >= NOW)


expiries = st.one_of(
    st.just(FOREVER),
    st.just(NOW),
    st.integers(-7200, 7200).map(lambda d: NOW + d),
    st.floats(-7200.0, 7200.0, allow_nan=False).map(lambda d: NOW + d),
)
# Strategies built once: drawing indexes keeps generation cheap at 300 examples.
_palettes = st.lists(st.sampled_from(ALL_PERMISSIONS), min_size=1, max_size=6, unique=True)
_role_names = st.lists(st.sampled_from(ROLE_POOL), min_size=1, max_size=6, unique=True)
_picks = st.lists(st.integers(0, 7), max_size=3)
_grant_rows = st.lists(
    st.tuples(
        st.sampled_from(POLICY_USERS[:3]),  # DAVE never holds anything
        st.integers(0, 20),  # which role; 20 is a role nobody defined
        st.sampled_from(SCOPES),
        expiries,
    ),
    max_size=8,
)
_any_permission = st.sampled_from(ALL_PERMISSIONS)


@st.composite
def worlds(draw: st.DrawFn, *, cycles: bool = False) -> World:
    """A random role graph (a DAG, or with `cycles` any graph) and grants over it.

    The permissions come from a small palette of the catalogue so that roles
    overlap and decisions are not almost always "deny".
    """
    palette = draw(_palettes)
    names = draw(_role_names)
    roles = []
    for index, name in enumerate(names):
        perms = frozenset(palette[i % len(palette)] for i in draw(_picks))
        # In a DAG a role inherits only from roles listed before it; with cycles
        # allowed, from any role, itself and an undefined one included.
        candidates = [*names, GHOST] if cycles else names[:index]
        picked = draw(_picks) if candidates else []
        parents = dict.fromkeys(candidates[i % len(candidates)] for i in picked)
        roles.append(RoleSpec(name, perms, tuple(parents)))
    grants = tuple(
        GrantSpec(
            id=i,
            user=user,
            role=GHOST if role == 20 else names[role % len(names)],
            scope=scope,
            expires_at=expires,
        )
        for i, (user, role, scope, expires) in enumerate(draw(_grant_rows), start=1)
    )
    asked = tuple(dict.fromkeys([*palette, draw(_any_permission)]))
    return World(tuple(roles), grants, asked)


def naive_reaches(roles: Mapping[str, RoleSpec], start: str, permission: str) -> bool:
    """Depth-first over parents with a visited set: the obviously right answer."""
    visited: set[str] = set()
    stack = [start]
    while stack:
        name = stack.pop()
        if name in visited:
            continue
        visited.add(name)
        spec = roles.get(name)
        if spec is None:
            continue
        if permission in spec.permissions:
            return True
        stack.extend(spec.parents)
    return False


def naive_distance(roles: Mapping[str, RoleSpec], start: str, permission: str) -> int | None:
    """Fewest inheritance steps from `start` to a role owning `permission` directly."""
    level, seen, steps = [start], {start}, 0
    while level:
        if any(permission in roles[n].permissions for n in level if n in roles):
            return steps
        following = []
        for name in level:
            for parent in roles[name].parents if name in roles else ():
                if parent not in seen:
                    seen.add(parent)
                    following.append(parent)
        level, steps = following, steps + 1
    return None


def naive_allows(world: World, user: str, permission: str, scope: str, now: float) -> bool:
    roles = world.role_map
    return any(
        g.user == user
        and g.expires_at > now
        and g.scope in (WILDCARD, scope)
        and naive_reaches(roles, g.role, permission)
        for g in world.grants
    )


def assert_explained(decision: Decision, world: World, now: float) -> None:
    """An allow names a live grant and a real inheritance path; a deny says why."""
    roles = world.role_map
    if not decision.allowed:
        assert decision.grant_id is None, decision
        assert decision.role is None and decision.via == (), decision
        assert decision.reason.strip(), decision
        return
    grants = {g.id: g for g in world.grants}
    assert decision.grant_id in grants, decision
    grant = grants[decision.grant_id]
    assert grant.user == decision.user, (decision, grant)
    assert grant.expires_at > now, (decision, grant)
    assert grant.scope in (WILDCARD, decision.scope), (decision, grant)
    assert decision.role == grant.role, (decision, grant)
    via = decision.via
    assert via and via[0] == grant.role, (decision, grant)
    assert len(set(via)) == len(via), f"path revisits a role: {via}"
    for child, parent in pairwise(via):
        assert parent in roles[child].parents, f"{child} does not inherit {parent}: {via}"
    assert decision.permission in roles[via[-1]].permissions, (decision, roles[via[-1]])
    assert len(via) - 1 == naive_distance(roles, grant.role, decision.permission), (
        f"{via} is not a shortest path"
    )
    # The memo keeps an allow until this instant: it must not outlive its grant.
    assert decision.valid_until <= grant.expires_at, (decision, grant)


@contextlib.contextmanager
def finishes_within(seconds: float) -> Iterator[None]:
    """Turn a hang (say, a cycle walked forever) into a failure instead of a stuck run."""

    def give_up(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds}s: does a role cycle loop forever?")

    if not hasattr(signal, "setitimer"):  # no interval timers (Windows): just run
        yield
        return
    previous = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@PURE
@given(world=worlds())
def test_a_decision_allows_exactly_when_a_live_grant_in_scope_reaches_the_permission(
    world: World,
) -> None:
    policy = world.policy(lambda: NOW)
    for user, permission, scope in world.queries():
        expected = naive_allows(world, user, permission, scope, NOW)
        decision = policy.decide(user, permission, scope)
        assert decision.allowed == expected, (user, permission, scope, decision)
        assert (decision.user, decision.permission, decision.scope) == (user, permission, scope)


@PURE
@given(world=worlds(cycles=True))
def test_role_cycles_and_undefined_parents_terminate_and_decide_like_the_reference(
    world: World,
) -> None:
    with finishes_within(2.0):
        policy = world.policy(lambda: NOW)
        for user, permission, scope in world.queries():
            decision = policy.decide(user, permission, scope)
            assert decision.allowed == naive_allows(world, user, permission, scope, NOW), (
                user,
                permission,
                scope,
                decision,
            )
            assert_explained(decision, world, NOW)
        for role in world.role_map:
            reached = {p for p in ALL_PERMISSIONS if naive_reaches(world.role_map, role, p)}
            assert policy.permissions_of_role(role) == reached, role


@PURE
@given(world=worlds())
def test_an_allow_names_the_users_grant_and_a_real_inheritance_path_and_a_deny_says_why(
    world: World,
) -> None:
    policy = world.policy(lambda: NOW)
    for user, permission, scope in world.queries():
        assert_explained(policy.decide(user, permission, scope), world, NOW)


@PURE
@given(world=worlds(cycles=True))
def test_asking_twice_gives_the_same_answer(world: World) -> None:
    policy = world.policy(lambda: NOW)
    for user, permission, scope in world.queries():
        first = policy.decide(user, permission, scope)
        second = policy.decide(user, permission, scope)
        assert second == first
        assert second.valid_until == first.valid_until


@PURE
@given(world=worlds(cycles=True))
def test_a_memo_held_to_a_few_decisions_stays_that_small_and_answers_alike(
    world: World,
) -> None:
    """A process's memo is bounded (snapshot.MEMO_LIMIT); starting it again loses speed,
    never correctness."""
    policy = world.policy(lambda: NOW)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshot, "MEMO_LIMIT", 3)
        for _ in range(2):
            for user, permission, scope in world.queries():
                decision = policy.decide(user, permission, scope)
                assert decision.allowed == naive_allows(world, user, permission, scope, NOW)
                assert len(policy._memo) <= 3


@PURE
@given(world=worlds(cycles=True))
def test_expired_grants_never_count_even_when_the_decision_was_cached_before_expiry(
    world: World,
) -> None:
    clock = ManualClock(NOW)
    policy = world.policy(clock)
    for query in world.queries():  # warm the memo while grants are still live
        policy.decide(*query)
    for instant in world.instants():
        clock.advance(instant - clock.now)
        for user, permission, scope in world.queries():
            decision = policy.decide(user, permission, scope)
            expected = naive_allows(world, user, permission, scope, clock.now)
            assert decision.allowed == expected, (clock.now, user, permission, scope, decision)
            assert_explained(decision, world, clock.now)


@PURE
@given(world=worlds(), offset=st.floats(0.0, 10_000.0, allow_nan=False))
def test_effective_permissions_list_what_decide_allows_in_each_scope(
    world: World, offset: float
) -> None:
    clock = ManualClock(NOW + offset)
    policy = world.policy(clock)
    for user in POLICY_USERS:
        effective = policy.effective_permissions(user)
        everywhere = effective.get(WILDCARD, frozenset())
        for scope in QUERY_SCOPES:
            listed = effective.get(scope, everywhere)
            for permission in ALL_PERMISSIONS:
                assert (permission in listed) == policy.decide(user, permission, scope).allowed, (
                    user,
                    permission,
                    scope,
                )


@PURE
@given(
    world=worlds(),
    name=st.text(min_size=1, max_size=20).filter(lambda s: s not in PERMISSIONS),
)
def test_a_permission_outside_the_catalogue_is_an_error_not_a_deny(world: World, name: str) -> None:
    policy = world.policy(lambda: NOW)
    for user in POLICY_USERS:
        for _ in range(2):  # the second time must not come from a memo either
            with pytest.raises(UnknownPermission):
                policy.decide(user, name, WILDCARD)


# ---------------------------------------------------------------------------
# Database-backed workspaces, one per example
# ---------------------------------------------------------------------------


@dataclass
class Workspace:
    db: Database
    gate: Gate
    clock: ManualClock

    def now_utc(self) -> datetime:
        return utcnow(self.clock)


def _reset_postgres(db: Database) -> None:
    with db.write() as session:
        session.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        session.execute(text("INSERT INTO policy_state (id, version) VALUES (1, 1)"))
        session.execute(
            text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": GENESIS_HASH}
        )
        sync_builtin_roles(session, utcnow())


@pytest.fixture(scope="module")
def new_workspace(
    pg_schema_url: str | None,
    sqlite_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[], contextlib.AbstractContextManager[Workspace]]:
    """A factory of fresh workspaces: admin bootstrapped, Alice, Bob and Carol known.

    Module-scoped (it only holds session-scoped things), so hypothesis can call
    it once per example without the function-scoped-fixture pitfall.
    """

    @contextlib.contextmanager
    def fresh() -> Iterator[Workspace]:
        folder: Path | None = None
        if pg_schema_url is None:
            folder = tmp_path_factory.mktemp("prop")
            target = folder / "wa_access.db"
            shutil.copyfile(sqlite_template, target)
            db = Database(f"sqlite:///{target}")
        else:
            db = Database(pg_schema_url)
            _reset_postgres(db)
        clock = ManualClock(START)
        # Step-up 2FA is orthogonal to these properties; with it always satisfied,
        # roles carrying sensitive permissions stay reachable for the scenarios.
        gate = build_gate(db, clock=clock, step_up=AlwaysVerified())
        try:
            outcome = gate.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN})
            assert outcome.status == "done", outcome
            with db.write() as session:
                for user in (ALICE, BOB, CAROL):
                    ensure_user(session, user, utcnow(clock))
                for number in REGISTERED:
                    register_number(session, number)
            yield Workspace(db, gate, clock)
        finally:
            db.dispose()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    return fresh


def held(policy: Policy, user: str) -> dict[str, frozenset[str]]:
    """What `user` may do now in each scope of the pool."""
    return {
        scope: frozenset(p for p in ALL_PERMISSIONS if policy.decide(user, p, scope).allowed)
        for scope in SCOPES
    }


def grant_table(db: Database) -> dict[int, tuple[Any, ...]]:
    with db.read() as session:
        rows = session.execute(
            select(
                Grant.id,
                Grant.user_id,
                Grant.role,
                Grant.scope,
                Grant.granted_by,
                Grant.expires_at,
                Grant.revoked_at,
            )
        )
        return {row[0]: tuple(row[1:]) for row in rows}


def role_table(db: Database) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Each role name seen in any of the three role tables, with its rows."""
    with db.read() as session:
        names = set(session.scalars(select(Role.name)))
        perms: dict[str, set[str]] = {}
        for role, permission in session.execute(
            select(RolePermission.role, RolePermission.permission)
        ):
            perms.setdefault(role, set()).add(permission)
        parents: dict[str, set[str]] = {}
        for role, parent in session.execute(select(RoleParent.role, RoleParent.parent)):
            parents.setdefault(role, set()).add(parent)
    return {
        name: (frozenset(perms.get(name, ())), frozenset(parents.get(name, ())))
        for name in names | set(perms) | set(parents)
    }


# ---------------------------------------------------------------------------
# 2. Granting never gives the granter more than they had
# ---------------------------------------------------------------------------

SAFE_BUILTINS = ("agent", "analyst", "support")  # no 2FA needed to assign them
BUILTINS = ("admin", "agent", "analyst", "developer", "support")
ADMIN_MADE = ("night-shift", "team-lead", "billing-desk", "auditors")
ALICE_MADE = ("alice-crew", "helpers", "shadow-admin")
DELEGATOR = "delegator"
EVERY_ROLE_NAME = (*BUILTINS, *ADMIN_MADE, DELEGATOR, *ALICE_MADE)

# Scopes as people type them: the core canonicalises them.
SPELLINGS: dict[str, tuple[str | None, ...]] = {
    WILDCARD: (None, WILDCARD),
    "+15550000001": ("+15550000001", "+1 555 000 0001"),
    "+15550000002": ("+15550000002", "+1-555-000-0002"),
    "+15550000003": ("+15550000003", "+1 (555) 000-0003"),
}
spelled_scopes = st.sampled_from(SCOPES).flatmap(
    lambda scope: st.tuples(st.just(scope), st.sampled_from(SPELLINGS[scope]))
)


@dataclass(frozen=True)
class CustomRole:
    name: str
    perms: tuple[str, ...]
    inherits: tuple[str, ...]


@dataclass(frozen=True)
class AssignAttempt:
    user: str
    role: str
    scope: str
    spelled: str | None
    duration: str | None


@dataclass(frozen=True)
class CreateAttempt:
    name: str
    perms: tuple[str, ...]
    inherits: tuple[str, ...]
    source: str | None


@dataclass(frozen=True)
class Advance:
    seconds: int


@dataclass(frozen=True)
class EscalationScenario:
    custom_roles: tuple[CustomRole, ...]
    delegator_perms: tuple[str, ...]
    delegator_scope: str
    alice_grants: tuple[tuple[str, str, str | None], ...]  # role, scope, duration
    attempts: tuple[AssignAttempt | CreateAttempt | Advance, ...]


advances = st.builds(Advance, st.integers(60, 3 * 3600))
durations = st.sampled_from((None, None, "4h", "30d"))


def assign(
    user: str, role: str, scope: tuple[str, str | None], duration: str | None
) -> AssignAttempt:
    """An assign as typed: `scope` is (canonical scope, how it is spelled)."""
    return AssignAttempt(user, role, scope[0], scope[1], duration)


def pass_on(user: str, grant: tuple[str, str], duration: str | None) -> AssignAttempt:
    """Alice hands one of her own grants (role, scope) on as it is."""
    return AssignAttempt(user, grant[0], grant[1], grant[1], duration)


assign_attempts = st.builds(
    assign,
    st.sampled_from((BOB, BOB, BOB, CAROL, ALICE)),
    st.sampled_from(EVERY_ROLE_NAME),
    spelled_scopes,
    durations,
)
create_attempts = st.builds(
    CreateAttempt,
    st.sampled_from(ALICE_MADE),
    st.lists(st.sampled_from(ALL_PERMISSIONS), max_size=4, unique=True).map(tuple),
    st.lists(st.sampled_from(EVERY_ROLE_NAME), max_size=2, unique=True).map(tuple),
    st.one_of(st.none(), st.sampled_from(EVERY_ROLE_NAME)),
)


@st.composite
def escalation_scenarios(draw: st.DrawFn) -> EscalationScenario:
    """Custom roles by the admin, Alice's grants, then what Alice tries.

    Some of Alice's attempts mirror what she holds, so that enough of them
    succeed; the rest ask for anything at all.
    """
    names = draw(st.lists(st.sampled_from(ADMIN_MADE), max_size=3, unique=True))
    custom: list[CustomRole] = []
    for name in names:
        perms = draw(
            st.lists(st.sampled_from(ALL_PERMISSIONS), min_size=1, max_size=5, unique=True)
        )
        earlier = [*SAFE_BUILTINS, *(c.name for c in custom)]
        inherits = draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True))
        custom.append(CustomRole(name, tuple(perms), tuple(inherits)))
    manage = draw(st.sampled_from((["roles:manage"], ["roles:manage"], [])))
    delegator_perms = ("roles:assign", *manage, *draw(st.sampled_from(([], ["roles:view"]))))
    delegator_scope = draw(st.sampled_from((WILDCARD, WILDCARD, WILDCARD, *NUMBERS[:2])))
    alice_grants = draw(
        st.lists(
            st.tuples(
                st.sampled_from((*SAFE_BUILTINS, *names)),
                st.sampled_from(SCOPES),
                st.sampled_from((None, None, "1h", "1d")),
            ),
            min_size=1,
            max_size=3,
            unique_by=lambda g: (g[0], g[1]),
        )
    )

    # Attempts that mirror what she holds: one of her own grants passed on as is,
    # or a new role made of what she holds in the whole workspace.
    her_grants = [(DELEGATOR, delegator_scope), *((r, s) for r, s, _ in alice_grants)]
    global_roles = [role for role, scope in her_grants if scope == WILDCARD]
    global_perms: set[str] = set()
    for role in global_roles:
        if role == DELEGATOR:
            global_perms |= set(delegator_perms)
        elif role in BUILTIN_ROLES:
            global_perms |= BUILTIN_ROLES[role].permissions
        else:
            global_perms |= set(next(c.perms for c in custom if c.name == role))
    her_perms = st.lists(
        st.sampled_from(sorted(global_perms or PERMISSIONS)), max_size=3, unique=True
    ).map(tuple)
    existing_roles = st.sampled_from((*BUILTINS, *names, DELEGATOR))
    mirrored_assigns = st.builds(
        pass_on, st.sampled_from((BOB, BOB, CAROL)), st.sampled_from(her_grants), durations
    )
    mirrored_creates = st.builds(
        CreateAttempt,
        st.sampled_from(ALICE_MADE),
        her_perms,
        st.lists(st.sampled_from(global_roles or [DELEGATOR]), max_size=1).map(tuple),
        st.none(),
    ).filter(lambda c: c.perms or c.inherits)
    # What she holds plus one existing role on top, inherited or copied.
    stretching_creates = st.builds(
        CreateAttempt,
        st.sampled_from(ALICE_MADE),
        her_perms,
        st.tuples(existing_roles) | st.just(()),
        st.none() | existing_roles,
    ).filter(lambda c: c.inherits or c.source)
    attempts = draw(
        st.lists(
            st.one_of(
                mirrored_assigns,
                assign_attempts,
                mirrored_creates,
                stretching_creates,
                create_attempts,
                advances,
            ),
            min_size=1,
            max_size=8,
        )
    )
    return EscalationScenario(
        tuple(custom), delegator_perms, delegator_scope, tuple(alice_grants), tuple(attempts)
    )


def _set_up_alice(ws: Workspace, scenario: EscalationScenario) -> None:
    """The admin makes the custom roles and gives Alice her roles, delegation included."""
    for role in (*scenario.custom_roles, CustomRole(DELEGATOR, scenario.delegator_perms, ())):
        outcome = run(
            ws.gate,
            ADMIN,
            "role.create",
            name=role.name,
            perms=list(role.perms),
            inherits=list(role.inherits),
        )
        assert outcome.status == "done", outcome
    grants = [(DELEGATOR, scenario.delegator_scope, None), *scenario.alice_grants]
    for role_name, scope, duration in grants:
        outcome = run(
            ws.gate,
            ADMIN,
            "role.assign",
            user=ALICE,
            role=role_name,
            number=scope,
            **{"for": duration},
        )
        assert outcome.status == "done", outcome


@WITH_DATABASE
@given(scenario=escalation_scenarios())
def test_granting_never_gives_more_than_the_granter_holds_and_refusals_write_nothing(
    new_workspace: Callable[[], contextlib.AbstractContextManager[Workspace]],
    scenario: EscalationScenario,
) -> None:
    with new_workspace() as ws:
        _set_up_alice(ws, scenario)
        # What Alice held, in each scope, when each of Bob's grants was made.
        alice_when_granted: dict[int, dict[str, frozenset[str]]] = {}
        for attempt in scenario.attempts:
            if isinstance(attempt, Advance):
                ws.clock.advance(attempt.seconds)
                continue
            policy = ws.gate.policy()
            alice_before = held(policy, ALICE)
            grants_before, roles_before = grant_table(ws.db), role_table(ws.db)
            outcome = _attempt(ws, attempt)
            note(f"{attempt} -> {outcome.status} {outcome.error_code}: {outcome.message}")
            event(f"{type(attempt).__name__} {outcome.status} {outcome.error_code or ''}")
            assert outcome.status != "failed", outcome
            grants_after, roles_after = grant_table(ws.db), role_table(ws.db)
            after = ws.gate.policy()

            if isinstance(attempt, AssignAttempt):
                assert roles_after == roles_before, "an assign changed the role tables"
                if outcome.status != "done":
                    assert grants_after == grants_before, f"refused assign wrote: {outcome}"
                    continue
                new = {gid: row for gid, row in grants_after.items() if gid not in grants_before}
                assert len(new) == 1, new
                ((gid, row),) = new.items()
                assert row[:4] == (attempt.user, attempt.role, attempt.scope, ALICE), row
                for old_id, old in grants_before.items():
                    if grants_after[old_id] != old:  # only an expired twin may be closed
                        assert old[:3] == row[:3], (old, row)
                        assert old[4] is not None and old[4] <= ws.now_utc(), (old, row)
                carried = after.permissions_of_role(attempt.role)
                assert carried <= alice_before[attempt.scope], (
                    f"Alice gave {attempt.user} {sorted(carried - alice_before[attempt.scope])} "
                    f"in {attempt.scope} without holding them there"
                )
                if attempt.user == BOB:
                    alice_when_granted[gid] = alice_before
            else:
                assert grants_after == grants_before, "a create changed the grants"
                if outcome.status != "done":
                    assert roles_after == roles_before, f"refused create wrote: {outcome}"
                    continue
                assert set(roles_after) == set(roles_before) | {attempt.name}
                assert attempt.name not in roles_before
                carried = after.permissions_of_role(attempt.name)
                assert carried, attempt
                assert carried <= alice_before[WILDCARD], (
                    f"Alice created {attempt.name} with {sorted(carried - alice_before[WILDCARD])}"
                    " which she does not hold in the whole workspace"
                )

        _assert_bob_holds_nothing_alice_lacked(ws, alice_when_granted)


def _attempt(ws: Workspace, attempt: AssignAttempt | CreateAttempt) -> Outcome:
    if isinstance(attempt, AssignAttempt):
        params: dict[str, Any] = {
            "user": attempt.user,
            "role": attempt.role,
            "number": attempt.spelled,
            "for": attempt.duration,
        }
        return run(ws.gate, ALICE, "role.assign", **params)
    return run(
        ws.gate,
        ALICE,
        "role.create",
        name=attempt.name,
        perms=list(attempt.perms),
        inherits=list(attempt.inherits),
        **{"from": attempt.source},
    )


def _assert_bob_holds_nothing_alice_lacked(
    ws: Workspace, alice_when_granted: Mapping[int, Mapping[str, frozenset[str]]]
) -> None:
    """Bob's grants all come from Alice: in each scope he holds only what she held."""
    policy = ws.gate.policy()
    bob = held(policy, BOB)
    live = {g.id: g for g in policy.live_grants(BOB)}
    assert set(live) <= set(alice_when_granted), "Bob holds a grant nobody recorded"
    for scope in SCOPES:
        allowed_by_alice: set[str] = set()
        for gid, grant in live.items():
            if grant.scope in (WILDCARD, scope):
                allowed_by_alice |= alice_when_granted[gid][scope]
        assert bob[scope] <= allowed_by_alice, (scope, sorted(bob[scope] - allowed_by_alice))
    effective = policy.effective_permissions(BOB)
    for scope, perms in effective.items():
        assert perms == bob[scope], scope


# ---------------------------------------------------------------------------
# 3. The last admin survives any sequence of revokes (and deactivations)
# ---------------------------------------------------------------------------

EXTRA_ADMINS = (DAVE, ERIN, FRANK)
ADMIN_CANDIDATES = (ADMIN, *EXTRA_ADMINS)
SUPERUSER_ROLE = "superuser"  # every permission, but not the built-in admin role


@dataclass(frozen=True)
class Removal:
    """`actor` asks to revoke admin (in the whole workspace) from `target`, or to
    deactivate `target` altogether; confirmed at once or left pending."""

    kind: Literal["revoke", "deactivate"]
    actor: str
    target: str
    confirm_now: bool

    def submit(self, gate: Gate) -> Outcome:
        if self.kind == "revoke":
            params = {"user": self.target, "role": "admin", "number": WILDCARD}
            return gate.submit(self.actor, "cli", "role.revoke", params)
        return gate.submit(self.actor, "cli", "user.deactivate", {"user": self.target})


@dataclass(frozen=True)
class ConfirmLater:
    pick: int


@dataclass(frozen=True)
class Wait:
    seconds: int


@dataclass(frozen=True)
class AdminScenario:
    extra_admins: tuple[str, ...]
    carol_is_superuser: bool
    steps: tuple[Removal | ConfirmLater | Wait, ...]


@dataclass
class AdminModel:
    """Who holds admin, who is deactivated, and so what the gate must allow."""

    known: set[str]
    holders: set[str]  # an unrevoked admin grant in the whole workspace
    superusers: set[str]  # every permission through a custom role
    inactive: set[str] = field(default_factory=set)

    @property
    def admins(self) -> set[str]:
        return self.holders - self.inactive

    def manages(self, actor: str) -> bool:
        """Holds roles:assign and every admin permission in the whole workspace."""
        return actor in (self.admins | self.superusers) - self.inactive

    def allows(self, removal: Removal) -> bool:
        actor, target = removal.actor, removal.target
        if removal.kind == "revoke":
            # Dropping your own grant needs no permission; anyone else's needs all of it.
            if target not in self.holders or not (actor == target or self.manages(actor)):
                return False
        elif (
            target not in self.known
            or target in self.inactive
            or actor == target
            or not self.manages(actor)
        ):
            return False
        return self.admins != {target}

    def apply(self, removal: Removal) -> None:
        if removal.kind == "revoke":
            self.holders.discard(removal.target)
        else:
            self.inactive.add(removal.target)


def remove_oneself(kind: Literal["revoke", "deactivate"], who: str, now: bool) -> Removal:
    return Removal(kind, who, who, now)


confirm_laters = st.builds(ConfirmLater, st.integers(0, 10))
waits = st.builds(Wait, st.sampled_from((30, 120, 299, 300)))


@st.composite
def admin_scenarios(draw: st.DrawFn) -> AdminScenario:
    """Mostly removals aimed at the people who really are admins, asked by anyone."""
    extra = tuple(draw(st.lists(st.sampled_from(EXTRA_ADMINS), max_size=3, unique=True)))
    admins = (ADMIN, *extra)
    carol_is_superuser = draw(st.sampled_from((True, True, False)))
    actors = st.sampled_from((*admins, *admins, ALICE, BOB, CAROL))
    targets = st.sampled_from(admins) | st.sampled_from((*ADMIN_CANDIDATES, BOB, CAROL))
    removals = st.builds(
        Removal, st.sampled_from(("revoke", "deactivate")), actors, targets, st.booleans()
    )
    self_removals = st.builds(
        remove_oneself,
        st.sampled_from(("revoke", "revoke", "deactivate")),
        st.sampled_from(admins),
        st.booleans(),
    )
    # Carol, when she holds every permission without being admin, goes for the admins.
    by_carol = st.builds(
        Removal,
        st.sampled_from(("revoke", "deactivate")),
        st.just(CAROL),
        st.sampled_from(admins),
        st.booleans(),
    )
    step = st.one_of(removals, self_removals, confirm_laters, waits)
    if carol_is_superuser:
        step = step | by_carol
    steps = draw(st.lists(step, min_size=1, max_size=12))
    return AdminScenario(extra, carol_is_superuser, tuple(steps))


def _set_up_admins(ws: Workspace, scenario: AdminScenario) -> AdminModel:
    """Extra admins straight into the table (assigning admin needs 2FA, not set up)."""
    if scenario.carol_is_superuser:
        outcome = run(ws.gate, ADMIN, "role.create", name=SUPERUSER_ROLE, perms=ALL_PERMISSIONS)
        assert outcome.status == "done", outcome
    holders = [(user, "admin") for user in scenario.extra_admins]
    if scenario.carol_is_superuser:
        holders.append((CAROL, SUPERUSER_ROLE))
    holders.append((BOB, "agent"))
    with ws.db.write() as session:
        now = ws.now_utc()
        for user, role in holders:
            ensure_user(session, user, now)
            session.add(
                Grant(
                    user_id=user,
                    role=role,
                    scope=WILDCARD,
                    granted_by=ADMIN,
                    reason="test setup",
                    granted_at=now,
                )
            )
        session.flush()
        bump_policy_version(txn_of(session), None)
    return AdminModel(
        known={ADMIN, ALICE, BOB, CAROL, *scenario.extra_admins},
        holders={ADMIN, *scenario.extra_admins},
        superusers={CAROL} if scenario.carol_is_superuser else set(),
    )


def _admins_now(ws: Workspace) -> set[str]:
    with ws.db.read() as session:
        return active_admins(session, ws.now_utc())


@WITH_DATABASE
@given(scenario=admin_scenarios())
def test_no_sequence_of_revokes_or_deactivations_removes_the_last_admin(
    new_workspace: Callable[[], contextlib.AbstractContextManager[Workspace]],
    scenario: AdminScenario,
) -> None:
    with new_workspace() as ws:
        model = _set_up_admins(ws, scenario)
        assert _admins_now(ws) == model.admins
        pending: list[tuple[str, Removal, float]] = []  # id, request, asked at

        def confirm(pending_id: str, request: Removal, asked_at: float) -> None:
            before = set(model.admins)
            outcome = ws.gate.confirm(pending_id, request.actor, "cli")
            expired = ws.clock.now - asked_at >= CONFIRMATION_TTL.total_seconds()
            expected = not expired and model.allows(request)
            note(f"confirm {request} -> {outcome.status}: {outcome.message}")
            event(f"confirm {request.kind} {outcome.status}")
            assert (outcome.status == "done") == expected, (request, before, outcome)
            if outcome.status == "done":
                model.apply(request)
            if before == {request.target}:
                assert outcome.status != "done", "the last admin was removed"
            again = ws.gate.confirm(pending_id, request.actor, "cli")
            assert again.error_code == "pending_used", f"confirmed twice: {again}"

        def assert_an_admin_remains() -> None:
            current = _admins_now(ws)
            assert current, "nobody is admin any more"
            assert current == model.admins, (current, model)

        for step in scenario.steps:
            if isinstance(step, Wait):
                ws.clock.advance(step.seconds)
            elif isinstance(step, ConfirmLater):
                if pending:
                    confirm(*pending.pop(step.pick % len(pending)))
            else:
                outcome = step.submit(ws.gate)
                note(f"submit {step} -> {outcome.status}: {outcome.message}")
                event(f"submit {step.kind} {outcome.status}")
                allowed = model.allows(step)
                assert (outcome.status == "needs_confirmation") == allowed, (step, model, outcome)
                if outcome.status == "needs_confirmation":
                    assert outcome.pending_id
                    request = (outcome.pending_id, step, ws.clock.now)
                    if step.confirm_now:
                        confirm(*request)
                    else:
                        pending.append(request)
            assert_an_admin_remains()
        while pending:  # whatever was left waiting is confirmed at the end
            confirm(*pending.pop())
            assert_an_admin_remains()


# ---------------------------------------------------------------------------
# 4. The /wa-role parser fails only with a UsageError
# ---------------------------------------------------------------------------

PARSER = settings(max_examples=2000, deadline=None)
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
# What the grammar may read as a user: a Slack mention, or an id with an optional "@".
_WHOLE_USER = re.compile(r"<@[UW][A-Z0-9]{2,20}(\|[^>]*)?>|@?[UW][A-Z0-9]{2,20}")

TOKENS = (
    *(s.name for s in SUBCOMMANDS),
    "help",
    "-h",
    "--help",
    "HELP",
    "Assign",
    "<@U0ALICE01>",
    "<@U0ALICE01|alice>",
    "<@U0BOB0001|>",
    "<@U0ALICE01",
    "<@alice>",
    "<@U0ALICE01|a|b>",
    "@U0CAROL01",
    "U0CAROL01",
    "W0ALICE01",
    "@alice",
    "agent",
    "admin",
    "night-shift",
    "templates:view",
    "--number",
    "--number=+15550000001",
    "--NUMBER",
    "+1555",
    "+15550000001",
    "+1 555 000 0001",
    "--for",
    "--for=",
    "30d",
    "4h",
    "--reason",
    "--reason=on call",
    "on call",
    "--from",
    "--perms",
    "templates:view,roles:view",
    "--inherits",
    "--uninherit",
    "--add",
    "--remove",
    "--2fa",
    "--2fa=on",
    "on",
    "off",
    "--description",
    "--unknown",
    "--",
    "---",
    "--=",
    '"',
    "'",
    '"on call"',
    "'on call'",
    "\u201csmart quotes\u201d",
    "\u2018half",
    "\\",
    "\\ ",
    "=",
    ",",
    "\x00",
    "\n",
    "\t",
    "#",
)


_pieces = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=12)
_glue = st.sampled_from((" ", " ", "  ", "\t", ""))
plausible_commands = st.builds(str.join, _glue, _pieces)

too_long_commands = st.integers(MAX_TEXT - 3, MAX_TEXT + 3).map(
    lambda n: ("assign <@U0ALICE01> agent --reason " + "x" * n)[:n]
)


def _assert_parses_or_refuses_with_usage(text_: str) -> None:
    try:
        parsed = parse(COMMAND, text_, SUBCOMMANDS)
    except UsageError as exc:
        assert exc.message.strip()
        assert exc.render().strip()
        return
    if parsed is None:
        return
    sub = parsed.subcommand
    assert sub in SUBCOMMANDS
    declared = {key for key, _, _ in sub.positionals} | {o.key for o in sub.options}
    assert set(parsed.params) <= declared, parsed.params
    for key, kind, required in sub.positionals:
        assert key in parsed.params or not required, (key, parsed.params)
        if kind == "user" and key in parsed.params:
            assert _USER_ID.fullmatch(str(parsed.params[key])), parsed.params[key]


@PARSER
@given(text_=st.text())
def test_any_text_is_parsed_or_refused_with_a_usage_error(text_: str) -> None:
    _assert_parses_or_refuses_with_usage(text_)


@PARSER
@given(text_=st.one_of(plausible_commands, too_long_commands))
def test_command_like_text_is_parsed_or_refused_with_a_usage_error(text_: str) -> None:
    _assert_parses_or_refuses_with_usage(text_)


MENTIONS = ("<@{}>", "<@{}|alice>", "@{}", "{}")
reasons = (
    st.text(
        st.characters(
            blacklist_categories=("Cs", "Cc"),
            blacklist_characters='"\u201c\u201d\u2018\u2019',
        ),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(lambda r: r and not r.startswith("--"))
)


@PURE
@given(
    user=st.sampled_from((ALICE, BOB, CAROL, "W0DAVE001")),
    mention=st.sampled_from(MENTIONS),
    role=st.sampled_from(("agent", "night-shift", "Team_Lead")),
    number=st.one_of(st.none(), st.sampled_from(NUMBERS)),
    duration=st.one_of(st.none(), st.sampled_from(("90m", "4h", "30d", "2w"))),
    reason=st.one_of(st.none(), reasons),
    order=st.permutations(range(3)),
)
def test_a_well_formed_assign_reads_back_as_typed(
    user: str,
    mention: str,
    role: str,
    number: str | None,
    duration: str | None,
    reason: str | None,
    order: Sequence[int],
) -> None:
    options = [
        ["--number", number] if number else [],
        ["--for", duration] if duration else [],
        ["--reason", f'"{reason}"'] if reason else [],
    ]
    words = ["assign", mention.format(user), role]
    for index in order:
        words += options[index]
    parsed = parse(COMMAND, " ".join(words), SUBCOMMANDS)
    assert parsed is not None
    assert parsed.subcommand.action == "role.assign"
    expected: dict[str, object] = {"user": user, "role": role}
    expected |= {"number": number} if number else {}
    expected |= {"for": duration} if duration else {}
    expected |= {"reason": reason} if reason else {}
    assert parsed.params == expected


_JUNK = st.text(st.sampled_from("abcxyz!$%&*+,-./:;<=>?@[]^_`{|}~é"), min_size=1, max_size=5)


@PURE
@given(
    user=st.sampled_from((ALICE, BOB, CAROL)),
    mention=st.sampled_from(MENTIONS),
    junk=_JUNK,
    subcommand=st.sampled_from(("assign", "revoke", "why", "show")),
)
def test_a_user_is_a_whole_mention_or_id_never_the_start_of_one(
    user: str, mention: str, junk: str, subcommand: str
) -> None:
    token = mention.format(user) + junk
    assume(not _WHOLE_USER.fullmatch(token))  # "<@U0ALICE01|al" + "ice>" is a whole mention
    rest = " agent" if subcommand in ("assign", "revoke") else ""
    rest = " templates:view" if subcommand == "why" else rest
    with pytest.raises(UsageError):
        parse(COMMAND, f"{subcommand} {token}{rest}", SUBCOMMANDS)
