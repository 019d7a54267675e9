"""How long a process behind on policy takes to catch up, with 100,000 grants.

Every process keeps a policy snapshot and checks one version row per request.
After a change made elsewhere, its next request reloads: the whole policy, or,
when every change since its snapshot named the people it touched (assign,
revoke, deactivate, approve, expiry), only those people's grants. This times
both in the same run, on SQLite, through the gate's own cache: the first
`Gate.policy()` of a second gate after one assignment by the first.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from rbac_core import Database, build_gate
from rbac_core.clock import utcnow
from rbac_core.store import migrate
from rbac_core.store.models import Grant, User

from .report import fmt_ns, say, section

ADMIN = "U0RELOADADM"


def _user(k: int) -> str:
    return f"U{k:09d}"


def fill(db: Database, grants: int) -> None:
    """`grants` people with one agent grant each, written in bulk, plus a bootstrapped admin."""
    now = utcnow()
    with db.write() as session:
        for start in range(0, grants, 10_000):
            ids = [_user(k) for k in range(start, min(grants, start + 10_000))]
            session.execute(
                insert(User),
                [{"id": u, "name": u.lower(), "created_at": now, "last_seen_at": now} for u in ids],
            )
            session.execute(
                insert(Grant),
                [
                    {
                        "user_id": u,
                        "role": "agent",
                        "scope": "*",
                        "granted_by": ADMIN,
                        "granted_at": now,
                        "reason": "bench",
                    }
                    for u in ids
                ],
            )
    gate = build_gate(db)
    outcome = gate.submit("operator", "cli", "system.bootstrap_admin", {"user": ADMIN})
    if outcome.status != "done":
        raise RuntimeError(f"bootstrap failed: {outcome.message}")


def run(*, quick: bool) -> None:
    grants = 20_000 if quick else 100_000
    rounds = 3 if quick else 5
    section(f"6. Catching up on policy after a change elsewhere ({grants:,} grants, SQLite)")
    with tempfile.TemporaryDirectory(prefix="wa-access-reload-") as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'wa_access.db'}")
        try:
            migrate.upgrade(db)
            fill(db, grants)
            writer = build_gate(db)  # the process that changes things
            behind = build_gate(db)  # the process that must catch up
            behind.policy()
            full: list[float] = []
            partial: list[float] = []
            for r in range(rounds):
                # A whole reload (a fresh process's first request): what every change
                # cost every process before changes named the people they touched.
                fresh = build_gate(db)
                begin = time.perf_counter_ns()
                fresh.policy()
                full.append(time.perf_counter_ns() - begin)
                asked = writer.submit(
                    ADMIN, "cli", "role.assign", {"user": _user(r), "role": "analyst"}
                )
                if asked.pending_id is None:
                    raise RuntimeError(f"assign: {asked.message}")
                if writer.confirm(asked.pending_id, ADMIN, "cli").status != "done":
                    raise RuntimeError("assign was not confirmed")
                before = behind.policies.partial_reloads
                begin = time.perf_counter_ns()
                behind.policy()
                partial.append(time.perf_counter_ns() - begin)
                if behind.policies.partial_reloads != before + 1:
                    raise RuntimeError("the catch-up was not a partial reload")
        finally:
            db.dispose()
    whole, one = statistics.median(full), statistics.median(partial)
    say(f"whole reload (a fresh process):      median {fmt_ns(whole)} over {rounds} rounds")
    say(f"catching up after one assignment:    median {fmt_ns(one)} over {rounds} rounds")
    say(f"catching up after an assignment costs {one / whole:.4f}x a whole reload")
