"""Decision latency of `rbac_core.policy.Policy`, warm and cold, against a dict baseline.

The policy is built straight from `RoleSpec`/`GrantSpec` (no database), so the
figures are the decision point alone. A warm decision is a memo hit and takes a
few hundred nanoseconds, below what one `perf_counter_ns` pair can resolve, so
warm calls are timed in batches of 100 and each batch gives one per-call
sample. Baselines go through exactly the same loop, with the same triples, in
the same passes (rotated so no variant always runs first), so loop overhead and
machine noise land on every variant alike and the ratios mean something.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rbac_core.clock import Clock, system_clock
from rbac_core.policy import FOREVER, GrantSpec, Policy, RoleSpec, role_closure
from rbac_core.values import WILDCARD

from .report import fmt_ns, percentile, say, section, verdict

Triple = tuple[str, str, str]
Batches = list[list[Triple]]
PassFn = Callable[[Batches, list[float]], None]

N_RESOURCES = 12
N_ACTIONS = 5  # 12 x 5 = 60 permissions
N_ROLES = 25
N_USERS = 1_000
N_NUMBERS = 10
N_QUERIES = 10_000
BATCH = 100
WARM_P50_BAR_NS = 1_000
RATIO_BAR = 4.0


@dataclass(frozen=True)
class Sizes:
    """How much to measure: the full run, or a smaller smoke run with --quick."""

    passes: int
    warmup_passes: int
    cold_rounds: int
    cold_triples: int


FULL = Sizes(passes=30, warmup_passes=2, cold_rounds=20, cold_triples=1_000)
QUICK = Sizes(passes=5, warmup_passes=1, cold_rounds=3, cold_triples=300)


@dataclass(frozen=True)
class Workload:
    """A synthetic workspace and a fixed query mix, identical for every variant."""

    catalogue: frozenset[str]
    roles: tuple[RoleSpec, ...]
    grants: tuple[GrantSpec, ...]
    users: tuple[str, ...]
    numbers: tuple[str, ...]
    queries: tuple[Triple, ...]

    def policy(self, clock: Clock = time.time, grants: Sequence[GrantSpec] | None = None) -> Policy:
        return Policy(
            self.roles,
            self.grants if grants is None else grants,
            clock=clock,
            catalogue=self.catalogue,
        )


def build_workload(seed: int, now: float, catalogue: Sequence[str] | None = None) -> Workload:
    """60 permissions (or `catalogue`), 25 roles in a DAG, 1,000 users with 1-3 grants
    each, 10,000 queries.

    Half of the queries are drawn from what a user actually holds (so a good
    share is allowed, as at a real gate) and half uniformly (mostly denied).
    """
    rng = random.Random(seed)
    if catalogue is None:
        catalogue = [f"res{r:02d}:action{a}" for r in range(N_RESOURCES) for a in range(N_ACTIONS)]
    roles: list[RoleSpec] = []
    for i in range(N_ROLES):
        earlier = [r.name for r in roles]
        parents = tuple(rng.sample(earlier, rng.randint(0, min(2, len(earlier)))))
        own = frozenset(rng.sample(catalogue, rng.randint(2, 4)))
        roles.append(RoleSpec(name=f"role{i:02d}", permissions=own, parents=parents))
    numbers = tuple(f"+1555000000{n}" for n in range(N_NUMBERS))
    users = tuple(f"U{i:08d}" for i in range(N_USERS))
    grants: list[GrantSpec] = []
    for user in users:
        for _ in range(rng.randint(1, 3)):
            scope = WILDCARD if rng.random() < 0.3 else rng.choice(numbers)
            expires = now + rng.uniform(1, 30) * 86_400 if rng.random() < 0.25 else FOREVER
            grants.append(
                GrantSpec(
                    id=len(grants) + 1,
                    user=user,
                    role=rng.choice(roles).name,
                    scope=scope,
                    expires_at=expires,
                    granted_by="U0ADMIN01",
                )
            )
    closure = role_closure({r.name: r for r in roles})
    by_user: dict[str, list[GrantSpec]] = {}
    for grant in grants:
        by_user.setdefault(grant.user, []).append(grant)
    scopes = (*numbers, WILDCARD)
    queries: list[Triple] = []
    for _ in range(N_QUERIES // 2):
        user = rng.choice(users)
        grant = rng.choice(by_user[user])
        perm = rng.choice(sorted(closure[grant.role]))
        scope = rng.choice(scopes) if grant.scope == WILDCARD else grant.scope
        queries.append((user, perm, scope))
    for _ in range(N_QUERIES - len(queries)):
        queries.append((rng.choice(users), rng.choice(catalogue), rng.choice(scopes)))
    rng.shuffle(queries)
    return Workload(
        frozenset(catalogue), tuple(roles), tuple(grants), users, numbers, tuple(queries)
    )


@contextmanager
def _no_gc() -> Iterator[None]:
    """Keep the collector out of timed sections, as `timeit` does."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# Each pass function walks every batch once and appends one per-call sample per
# batch. They are written out one by one, not through a shared helper taking a
# callable, so the inline-dict variant really has no Python call in its loop.


def _pass_call(call: Callable[[str, str, str], object]) -> PassFn:
    def run(batches: Batches, out: list[float]) -> None:
        clock = time.perf_counter_ns
        for batch in batches:
            start = clock()
            for user, perm, scope in batch:
                call(user, perm, scope)
            out.append((clock() - start) / len(batch))

    return run


def _pass_inline(table: dict[Triple, bool]) -> PassFn:
    def run(batches: Batches, out: list[float]) -> None:
        clock = time.perf_counter_ns
        for batch in batches:
            start = clock()
            for user, perm, scope in batch:
                table.get((user, perm, scope))
            out.append((clock() - start) / len(batch))

    return run


def _pass_loop_only(batches: Batches, out: list[float]) -> None:
    clock = time.perf_counter_ns
    for batch in batches:
        start = clock()
        for _user, _perm, _scope in batch:
            pass
        out.append((clock() - start) / len(batch))


def _measure_interleaved(
    variants: Sequence[tuple[str, PassFn]], batches: Batches, sizes: Sizes
) -> dict[str, list[float]]:
    """One pass of each variant in turn, rotating the order every pass."""
    samples: dict[str, list[float]] = {name: [] for name, _ in variants}
    with _no_gc():
        for _ in range(sizes.warmup_passes):
            for _name, run in variants:
                run(batches, [])
        for pass_no in range(sizes.passes):
            shift = pass_no % len(variants)
            for name, run in (*variants[shift:], *variants[:shift]):
                run(batches, samples[name])
    return samples


def _cold(workload: Workload, sizes: Sizes) -> tuple[list[float], list[float], float]:
    """Per-call first decisions on fresh policies, build times, and the timer's own cost."""
    distinct = list(dict.fromkeys(workload.queries))[: sizes.cold_triples]
    clock = time.perf_counter_ns
    firsts: list[float] = []
    builds: list[float] = []
    with _no_gc():
        overhead = min(-(clock() - clock()) for _ in range(10_000))
        for _ in range(sizes.cold_rounds):
            start = clock()
            policy = workload.policy()
            builds.append(clock() - start)
            decide = policy.decide
            for user, perm, scope in distinct:
                start = clock()
                decide(user, perm, scope)
                firsts.append(clock() - start)
    return firsts, builds, overhead


def _change_is_visible(workload: Workload, before: Policy) -> None:
    """Remove the grant behind an allowed triple; a new snapshot must deny it."""
    for user, perm, scope in workload.queries:
        old = before.decide(user, perm, scope)
        if not old.allowed:
            continue
        kept = [g for g in workload.grants if g.id != old.grant_id]
        new = workload.policy(grants=kept).decide(user, perm, scope)
        if new.allowed:
            continue  # another grant covers it too; look for a triple that hinges on one
        still = before.decide(user, perm, scope).allowed
        say(f"sanity: ({user}, {perm}, {scope})")
        say(f"  before: allowed  - {old.reason}")
        say(f"  after removing grant #{old.grant_id}, new Policy: denied - {new.reason}")
        say(f"  old snapshot still allows it (immutable): {still}")
        say(f"  change visible: {verdict(not new.allowed and still)}")
        return
    say("sanity: change visible: FAIL (no allowed triple turned into a denial)")


_LABELS = {
    "decide": "Policy.decide, clock=time.time",
    "decide default clock": "Policy.decide, clock=system_clock (default)",
    "baseline fn": "baseline (a): def f(u,p,s): table.get(...)",
    "baseline inline": "baseline (b): inline table.get((u,p,s))",
    "loop only": "empty loop body (loop overhead)",
}


def _warm(
    workload: Workload, policy: Policy, table: dict[Triple, bool], sizes: Sizes
) -> tuple[float, float]:
    """Warm latency of decide and the baselines; returns decide p50 and its ratio to (a).

    `policy` and `table` must already hold every query (memo warmed, answers
    precomputed). The default-clock policy is measured too because it is what
    `PolicyCache` builds in production, so the figure is the one a request sees.
    """
    default_clock_policy = workload.policy(clock=system_clock)
    for query in workload.queries:
        default_clock_policy.decide(*query)

    def baseline(user: str, perm: str, scope: str) -> bool | None:
        return table.get((user, perm, scope))

    queries = list(workload.queries)
    batches = [queries[i : i + BATCH] for i in range(0, len(queries), BATCH)]
    variants: list[tuple[str, PassFn]] = [
        ("decide", _pass_call(policy.decide)),
        ("baseline fn", _pass_call(baseline)),
        ("baseline inline", _pass_inline(table)),
        ("decide default clock", _pass_call(default_clock_policy.decide)),
        ("loop only", _pass_loop_only),
    ]
    samples = _measure_interleaved(variants, batches, sizes)
    p50 = {name: percentile(s, 50) for name, s in samples.items()}
    p99 = {name: percentile(s, 99) for name, s in samples.items()}

    say()
    say(
        f"warm (memo hit): {sizes.passes} interleaved passes x {len(batches)} batches "
        f"of {BATCH} calls = {len(samples['decide']):,} per-call samples per variant"
    )
    for name, label in _LABELS.items():
        say(f"  {label:<46} p50 {fmt_ns(p50[name]):>9}   p99 {fmt_ns(p99[name]):>9}")
    ratio = p50["decide"] / p50["baseline fn"]
    say(f"  ratio decide p50 / baseline (a) function p50: {ratio:.2f}")
    say(
        f"  ratio decide p50 / baseline (b) inline p50:   "
        f"{p50['decide'] / p50['baseline inline']:.2f}"
    )
    say(
        f"  ratio decide (default clock) p50 / baseline (a) p50: "
        f"{p50['decide default clock'] / p50['baseline fn']:.2f}"
    )
    return p50["decide"], ratio


def _report_cold(workload: Workload, sizes: Sizes) -> None:
    firsts, builds, overhead = _cold(workload, sizes)
    say()
    say(
        f"cold (empty memo): {sizes.cold_rounds} fresh policies x {sizes.cold_triples:,} "
        f"first decisions = {len(firsts):,} samples, each timed alone "
        f"(includes ~{fmt_ns(overhead)} timer overhead)"
    )
    say(
        f"  first decision       p50 {fmt_ns(percentile(firsts, 50)):>9}   "
        f"p99 {fmt_ns(percentile(firsts, 99)):>9}"
    )
    say(
        f"  build Policy ({len(workload.users):,} users, {len(workload.grants):,} grants)  "
        f"p50 {fmt_ns(percentile(builds, 50))}   max {fmt_ns(max(builds))}"
    )


def run(*, quick: bool, seed: int) -> None:
    sizes = QUICK if quick else FULL
    section("1. Decision latency (rbac_core.policy.Policy, no database)")
    workload = build_workload(seed, time.time())
    say(
        f"workload: {len(workload.catalogue)} permissions, {len(workload.roles)} roles (DAG), "
        f"{len(workload.users):,} users, {len(workload.numbers)} numbers + '*', "
        f"{len(workload.grants):,} grants "
        f"({sum(g.expires_at != FOREVER for g in workload.grants):,} expiring), seed {seed}"
    )
    policy = workload.policy(clock=time.time)
    table = {q: policy.decide(*q).allowed for q in workload.queries}  # also warms the memo
    allowed = sum(table[q] for q in workload.queries)
    say(
        f"queries: {len(workload.queries):,} triples ({len(table):,} distinct), "
        f"{allowed:,} allowed / {len(workload.queries) - allowed:,} denied"
    )
    warm_p50, ratio = _warm(workload, policy, table, sizes)
    _report_cold(workload, sizes)
    say()
    _change_is_visible(workload, policy)
    say()
    say(f"decision p50 warm <= 1 µs: {verdict(warm_p50 <= WARM_P50_BAR_NS)} ({fmt_ns(warm_p50)})")
    say(
        f"decision p50 <= 4x dict baseline (function-call baseline): "
        f"{verdict(ratio <= RATIO_BAR)} (ratio {ratio:.2f})"
    )
