"""The gate's decision path beside pycasbin and cedarpy: one scenario, one run, ratios.

What a surface pays to learn whether someone may do something is not the cached
`Policy.decide` (a memo hit, a few hundred ns) but `Gate.decide`: a look at the
policy stamp (store/stamp.py, store/listened_stamp.py), and a read of the policy
version whenever it moved, so a grant revoked by another process is refused by
the very next decision; then the decision. This puts,
on one scenario (1,000 people, 25 roles in a DAG, the 38 permissions of the
catalogue, 10 numbers; decisions.build_workload) and in one run:

- wa-access: the cached decision; the first decision of a process after
  another one changed a grant (version read, partial reload, decision); the
  gate's decision path (`Gate.decide`, on SQLite and with --pg on PostgreSQL);
  a whole read-only gate call with its audit entry (`role.show`); on PostgreSQL,
  how long a change takes to reach a process on another machine (a notification
  from its commit to the listener counting it, over loopback);
- pycasbin's `FastEnforcer` (RBAC with domains: a grant's scope is its domain,
  each role's permissions flattened through its parents) and cedarpy (a
  pre-parsed `PolicySet` and `Entities`: the fastest way either library offers);

checking first that all three engines answer all 10,000 queries alike. Both
libraries are optional (`pip install -e '.[bench]'`); without them the run
says so and measures wa-access alone.
"""

from __future__ import annotations

import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from rbac_core import Database, Gate, build_gate
from rbac_core.clock import utcnow
from rbac_core.directory import register_number
from rbac_core.policy import FOREVER, role_closure
from rbac_core.policy.catalogue import CATALOGUE
from rbac_core.policy.snapshot import MEMO_LIMIT
from rbac_core.policy.versions import bump_policy_version
from rbac_core.principals import principal_for
from rbac_core.store import migrate, txn_of
from rbac_core.store.listened_stamp import NOTIFY, ListenedStamp, listener_for
from rbac_core.store.models import Grant, Role, RoleParent, RolePermission, User
from rbac_core.values import WILDCARD
from tests.helpers import throwaway_schema

from .decisions import Triple, Workload, build_workload
from .report import fmt_ns, percentile, say, section, verdict

GATE_P50_BAR_NS = 10_000
CEDAR_RATIO_BAR = 4.0
ADMIN = "U0ENGINEADM"
HINGING_MAX = 100


# -- the other engines, on the same scenario -----------------------------------------

CASBIN_MODEL = """
[request_definition]
r = act, sub, dom

[policy_definition]
p = act, sub

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (g(r.sub, p.sub, r.dom) || g(r.sub, p.sub, "*")) && r.act == p.act
"""


def casbin_decider(workload: Workload) -> Callable[[str, str, str], bool] | None:
    """pycasbin's fastest enforcer on the workload, or None when it is not installed.

    `FastEnforcer` looks only at the policies whose first field is the request's first:
    the permission comes first in both, so each request reads that permission's roles.
    """
    try:
        import casbin  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    with tempfile.TemporaryDirectory(prefix="wa-access-casbin-") as tmp:
        path = Path(tmp) / "rbac_with_domains.conf"
        path.write_text(CASBIN_MODEL)
        enforcer = casbin.FastEnforcer(str(path), cache_key_order=[0])
    closure = role_closure({r.name: r for r in workload.roles})
    enforcer.add_policies([[perm, role] for role, perms in closure.items() for perm in perms])
    enforcer.add_named_grouping_policies(
        "g", [list(t) for t in sorted({(g.user, g.role, g.scope) for g in workload.grants})]
    )
    enforce = enforcer.enforce

    def decide(user: str, permission: str, scope: str) -> bool:
        return bool(enforce(permission, user, scope))

    return decide


def cedar_decider(workload: Workload) -> Callable[[str, str, str], bool] | None:
    """cedarpy with its policies and entities parsed once, or None when not installed.

    One policy per role, as Cedar is meant to be written: each permission is an action
    in the groups of the roles holding it (through their parents), and a person's
    grants are a set of (role, scope) records that the policy looks the scope up in.
    """
    try:
        import cedarpy  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    closure = role_closure({r.name: r for r in workload.roles})
    policies = "\n".join(
        f'permit(principal, action in Action::"role:{role}", resource) when {{ '
        f'principal.grants.contains({{role: "{role}", scope: "*"}}) || '
        f'principal.grants.contains({{role: "{role}", scope: resource.id}}) }};'
        for role in sorted(closure)
    )
    held: dict[str, list[dict[str, str]]] = {}
    for grant in workload.grants:
        held.setdefault(grant.user, []).append({"role": grant.role, "scope": grant.scope})
    roles_of: dict[str, list[str]] = {}
    for role, perms in closure.items():
        for perm in perms:
            roles_of.setdefault(perm, []).append(role)
    entities: list[dict[str, Any]] = [
        {"uid": {"type": "User", "id": u}, "attrs": {"grants": held.get(u, [])}, "parents": []}
        for u in workload.users
    ]
    entities += [
        {"uid": {"type": "Number", "id": n}, "attrs": {"id": n}, "parents": []}
        for n in (*workload.numbers, WILDCARD)
    ]
    entities += [
        {
            "uid": {"type": "Action", "id": perm},
            "attrs": {},
            "parents": [{"type": "Action", "id": f"role:{r}"} for r in sorted(roles)],
        }
        for perm, roles in roles_of.items()
    ]
    entities += [
        {"uid": {"type": "Action", "id": f"role:{r}"}, "attrs": {}, "parents": []} for r in closure
    ]
    policy_set = cedarpy.PolicySet.from_str(policies)
    parsed = cedarpy.Entities.from_json_str(json.dumps(entities))
    allow = cedarpy.Decision.Allow
    is_authorized = cedarpy.is_authorized

    def decide(user: str, permission: str, scope: str) -> bool:
        request = {
            "principal": f'User::"{user}"',
            "action": f'Action::"{permission}"',
            "resource": f'Number::"{scope}"',
            "context": {},
        }
        return bool(is_authorized(request, policy_set, parsed).decision == allow)

    return decide


# -- wa-access on a database -----------------------------------------------------------


def fill(db: Database, workload: Workload) -> None:
    """The workload's roles, people, numbers and grants, written in bulk."""
    now = utcnow()
    with db.write() as session:
        for number in workload.numbers:
            register_number(session, number)
        session.execute(
            insert(Role),
            [{"name": r.name, "description": "bench", "created_at": now} for r in workload.roles],
        )
        session.execute(
            insert(RolePermission),
            [{"role": r.name, "permission": p} for r in workload.roles for p in r.permissions],
        )
        links = [{"role": r.name, "parent": p} for r in workload.roles for p in r.parents]
        if links:
            session.execute(insert(RoleParent), links)
        session.execute(
            insert(User),
            [
                {"id": u, "name": u.lower(), "created_at": now, "last_seen_at": now}
                for u in (*workload.users, ADMIN)
            ],
        )
        session.execute(
            insert(Grant),
            [
                {
                    "id": g.id,
                    "user_id": g.user,
                    "role": g.role,
                    "scope": g.scope,
                    "granted_by": ADMIN,
                    "granted_at": now,
                    "expires_at": None
                    if g.expires_at == FOREVER
                    else datetime.fromtimestamp(g.expires_at, UTC),
                }
                for g in workload.grants
            ],
        )
        bump_policy_version(txn_of(session), None)


def revoke(db: Database, grant: int, user: str) -> None:
    """Another process revokes a grant, as the gate writes it: row, then a version naming them."""
    with db.write() as session:
        session.execute(update(Grant).where(Grant.id == grant).values(revoked_at=utcnow()))
        bump_policy_version(txn_of(session), [user])


def restore(db: Database, grant: int, user: str) -> None:
    with db.write() as session:
        session.execute(update(Grant).where(Grant.id == grant).values(revoked_at=None))
        bump_policy_version(txn_of(session), [user])


def timed_each(call: Callable[[str, str, str], object], queries: Sequence[Triple]) -> list[float]:
    clock = time.perf_counter_ns
    out: list[float] = []
    for user, perm, scope in queries:
        start = clock()
        call(user, perm, scope)
        out.append(clock() - start)
    return out


def gate_figures(db: Database, workload: Workload, rounds: int) -> dict[str, list[float]]:
    """Per-call ns of the gate's decision path, a read-only call, and a first decision after
    a change made by another gate (another process's, as far as the cache can tell)."""
    reader = build_gate(db)
    queries = list(workload.queries)
    deadline = time.monotonic() + 30
    while db.policy_stamp.read() is None:  # PostgreSQL: until the listener is up
        if time.monotonic() > deadline:
            raise RuntimeError("the policy stamp never became readable")
        time.sleep(0.01)
    for query in queries:  # every answer cached, as in a process that has run a while
        reader.decide(*query)
    figures = {"gate decide": timed_each(reader.decide, queries)}
    shows: list[float] = []
    for user in workload.users[:rounds]:
        start = time.perf_counter_ns()
        outcome = reader.submit(principal_for(user), "slack", "role.show", {})
        shows.append(time.perf_counter_ns() - start)
        if outcome.status != "done":
            raise RuntimeError(f"role.show: {outcome.message}")
    figures["read-only gate call"] = shows
    firsts: list[float] = []
    for user, perm, scope, grant in hinging(reader, workload)[:rounds]:
        revoke(db, grant, user)  # by another process, as far as `reader` can tell
        start = time.perf_counter_ns()
        refused = not reader.decide(user, perm, scope).allowed
        firsts.append(time.perf_counter_ns() - start)
        restore(db, grant, user)
        reader.decide(user, perm, scope)
        if not refused:
            raise RuntimeError(f"a revoked grant still allowed ({user}, {perm}, {scope})")
    figures["first decision after a change"] = firsts
    if not db.is_sqlite:
        figures["change heard on another machine"] = heard_from_elsewhere(db, rounds)
    return figures


def heard_from_elsewhere(db: Database, rounds: int) -> list[float]:
    """ns from the commit of a notification signed by another machine to this process's
    listener counting it: how stale a process elsewhere may be (listened_stamp.py)."""
    stamp = db.policy_stamp
    assert isinstance(stamp, ListenedStamp)
    listener = listener_for(db.engine)
    out: list[float] = []
    with db.engine.connect() as conn:
        for _ in range(rounds):
            before = listener.heard
            change = conn.begin()
            conn.exec_driver_sql(NOTIFY, ("elsewhere",))
            start = time.perf_counter_ns()
            change.commit()
            while listener.heard == before:
                if time.perf_counter_ns() - start > 5e9:
                    raise RuntimeError("a notification was never heard")
                time.sleep(0.00002)  # lets the listener's thread have the interpreter
            out.append(time.perf_counter_ns() - start)
    return out


def hinging(gate: Gate, workload: Workload) -> list[tuple[str, str, str, int]]:
    """Allowed queries that one grant alone allows (one per person): revoking that grant
    must turn each into a denial."""
    policy = gate.policy()
    found: list[tuple[str, str, str, int]] = []
    seen: set[str] = set()
    for user, perm, scope in workload.queries:
        decision = policy.decide(user, perm, scope)
        if not decision.allowed or decision.grant_id is None or user in seen:
            continue
        kept = [g for g in workload.grants if g.id != decision.grant_id]
        if workload.policy(grants=kept).decide(user, perm, scope).allowed:
            continue  # another grant allows it too
        seen.add(user)
        found.append((user, perm, scope, decision.grant_id))
        if len(found) >= HINGING_MAX:
            break
    return found


@contextmanager
def database(label: str, pg_url: str | None, tmp: Path) -> Iterator[Database]:
    if label == "SQLite":
        db = Database(f"sqlite:///{tmp / 'engines.db'}")
        try:
            yield db
        finally:
            db.dispose()
        return
    assert pg_url is not None
    with throwaway_schema(pg_url, "wa_engines") as url:
        db = Database(url)
        try:
            yield db
        finally:
            db.dispose()


# -- the run -------------------------------------------------------------------------------


def unique_grants(workload: Workload) -> Workload:
    """The workload with one grant per (person, role, scope), as the database keeps them."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for grant in workload.grants:
        if (grant.user, grant.role, grant.scope) not in seen:
            seen.add((grant.user, grant.role, grant.scope))
            kept.append(grant)
    return replace(workload, grants=tuple(kept))


def agreement(
    workload: Workload, deciders: dict[str, Callable[[str, str, str], bool]]
) -> dict[str, int]:
    """Queries on which each engine disagrees with wa-access's Policy."""
    policy = workload.policy()
    truth = [policy.decide(*q).allowed for q in workload.queries]
    return {
        name: sum(decide(*q) != t for q, t in zip(workload.queries, truth, strict=True))
        for name, decide in deciders.items()
    }


def memo_figures(workload: Workload, queries: Sequence[Triple]) -> None:
    """What the decision memo costs a process: a miss in time, an entry in memory, and a
    full memo (snapshot.MEMO_LIMIT entries) per process."""
    fresh = workload.policy()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for query in queries:
        fresh.decide(*query)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    entries = len({tuple(q) for q in queries})
    fresh = workload.policy()  # untraced: tracing slows every allocation
    misses = timed_each(lambda u, p, s: fresh.decide(u, p, s), queries)
    line("wa-access Policy.decide, not yet memoised", misses)
    each = grown / max(entries, 1)
    say(
        f"  decision memo: {each:,.0f} bytes per decision ({entries:,} decisions, traced); "
        f"full at {MEMO_LIMIT:,} decisions = {each * MEMO_LIMIT / 2**20:,.1f} MiB per process"
    )


def line(label: str, samples: Sequence[float]) -> None:
    say(
        f"  {label:<56} p50 {fmt_ns(percentile(samples, 50)):>9}   "
        f"p99 {fmt_ns(percentile(samples, 99)):>9}"
    )


def run(*, quick: bool, seed: int, pg_url: str | None = None) -> None:
    section("1b. The gate's decision path beside pycasbin and cedarpy (one scenario, one run)")
    workload = unique_grants(build_workload(seed, time.time(), sorted(CATALOGUE)))
    say(
        f"scenario: {len(workload.users):,} people, {len(workload.roles)} roles (DAG), "
        f"{len(workload.catalogue)} permissions, {len(workload.numbers)} numbers, "
        f"{len(workload.grants):,} grants; {len(workload.queries):,} queries, seed {seed}"
    )
    policy = workload.policy()
    deciders: dict[str, Callable[[str, str, str], bool]] = {
        "wa-access Policy.decide (cached)": lambda u, p, s: policy.decide(u, p, s).allowed
    }
    for name, make in (("pycasbin FastEnforcer", casbin_decider), ("cedarpy", cedar_decider)):
        built = make(workload)
        if built is None:
            say(f"  {name}: not installed (pip install -e '.[bench]'), not measured")
        else:
            deciders[name] = built
    disagreements = agreement(workload, deciders)
    say(
        "agreement with wa-access on every query: "
        + ", ".join(f"{name} {n} differ" for name, n in disagreements.items())
        + f" -> {verdict(not any(disagreements.values()))}"
    )
    queries = list(workload.queries)[: 2_000 if quick else 10_000]
    samples = {name: timed_each(decide, queries) for name, decide in deciders.items()}
    samples = {  # a second, interleaved pass: the figures kept are the second's
        name: timed_each(decide, queries) for name, decide in deciders.items()
    }
    for name, values in samples.items():
        line(name, values)
    memo_figures(workload, queries)
    rounds = 20 if quick else 100
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="wa-access-engines-") as tmp_name:
        for label in ("SQLite", "PostgreSQL") if pg_url else ("SQLite",):
            with database(label, pg_url, Path(tmp_name)) as db:
                migrate.upgrade(db)
                fill(db, workload)
                results[label] = gate_figures(db, workload, rounds)
            for name, values in results[label].items():
                line(f"wa-access {name} ({label})", values)
    if not pg_url:
        say("  PostgreSQL: not measured (pass --pg URL)")
    cedar = samples.get("cedarpy")
    for label, figures in results.items():
        gate_p50 = percentile(figures["gate decide"], 50)
        ratio = f"{percentile(cedar, 50) / gate_p50:.2f}x cedarpy" if cedar else "cedarpy absent"
        held = gate_p50 <= GATE_P50_BAR_NS and (
            cedar is not None and percentile(cedar, 50) / gate_p50 >= CEDAR_RATIO_BAR
        )
        say(
            f"  {label}: gate decision p50 <= {fmt_ns(GATE_P50_BAR_NS)} and >= "
            f"{CEDAR_RATIO_BAR:.0f}x faster than cedarpy: {verdict(held)} "
            f"({fmt_ns(gate_p50)}, {ratio})"
        )
