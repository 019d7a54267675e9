"""The access review: which live grants deserve a second look, and why.

A review is opened by the gate (`audit.review`, authorised and audited), then
built here by two statements that run in the database, so nothing is loaded
into Python whatever the size of the workspace:

1. `fold_activity` brings `user_activity` up to date from the audit log (every
   allowed entry is activity). It folds only entries it has not folded before,
   so after the first review a fold reads a week of log, not all of it.
2. One INSERT ... SELECT gives each live grant at most one finding, the most
   pressing: its holder is deactivated (here or in Slack), lacks the 2FA its
   role requires, has done nothing for the review's N days, or the grant
   expires within 7 days. Rebuilding replaces a review's findings, so a run
   that died half way is rebuilt from scratch by whoever takes the period over.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, delete, or_, select, text
from sqlalchemy.orm import Session

from ..policy import Policy, load_roles
from ..store import Txn
from ..store.models import (
    AccessReview,
    ActivityRollup,
    Grant,
    ReviewFinding,
    User,
    UserActivity,
    UTCDateTime,
)

DEFAULT_DAYS = 30
MAX_DAYS = 3650
EXPIRING_WITHIN = timedelta(days=7)
KEEP_FOR = timedelta(days=30)
BATCH = 1_000
PAGE_SIZE = 15

# The order findings are weighed in: a grant gets the first that applies.
KINDS = ("deactivated", "no_2fa", "inactive", "expiring")
KIND_TITLES = {
    "deactivated": "deactivated but still holding access",
    "no_2fa": "holding a 2FA role without 2FA",
    "inactive": "inactive",
    "expiring": "expiring within 7 days",
}

_GRANTS = cast(Table, Grant.__table__)
_USERS = cast(Table, User.__table__)
_ACTIVITY = cast(Table, UserActivity.__table__)
_FINDINGS = cast(Table, ReviewFinding.__table__)

# Dialect-neutral upsert: both SQLite (3.24+) and PostgreSQL speak ON CONFLICT.
# The WHERE clause is required by SQLite's parser when an upsert takes a SELECT.
# Grouped first, then joined to `users` (one lookup per person, not per entry), so
# operator and scheduler entries fold into nothing.
_FOLD = text(
    "INSERT INTO user_activity (user_id, last_active_us) "
    "SELECT g.actor, g.last_us FROM ("
    "SELECT actor, MAX(ts_us) AS last_us FROM audit_log "
    "WHERE seq > :after AND seq <= :upto AND decision = 'allow' GROUP BY actor"
    ") g JOIN users u ON u.id = g.actor WHERE 1 = 1 "
    "ON CONFLICT (user_id) DO UPDATE SET last_active_us = CASE "
    "WHEN excluded.last_active_us > user_activity.last_active_us "
    "THEN excluded.last_active_us ELSE user_activity.last_active_us END"
)


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def from_micros(us: int | None) -> datetime | None:
    return None if us is None else datetime.fromtimestamp(us / 1_000_000, UTC)


def fold_activity(session: Session) -> int:
    """Fold new audit entries into `user_activity`; returns the last seq folded."""
    rollup = session.execute(
        select(ActivityRollup).where(ActivityRollup.id == 1).with_for_update()
    ).scalar_one()
    upto = session.scalar(text("SELECT MAX(seq) FROM audit_log")) or 0
    if upto > rollup.through_seq:
        session.execute(_FOLD, {"after": rollup.through_seq, "upto": upto})
        rollup.through_seq = upto
    return int(rollup.through_seq)


def last_active(session: Session, user: str) -> datetime | None:
    """When `user` last did something allowed, counting entries not folded yet."""
    folded = session.scalar(select(ActivityRollup.through_seq).where(ActivityRollup.id == 1))
    rolled = session.scalar(select(UserActivity.last_active_us).where(UserActivity.user_id == user))
    fresh = session.scalar(
        text(
            "SELECT MAX(ts_us) FROM audit_log "
            "WHERE seq > :after AND actor = :user AND decision = 'allow'"
        ),
        {"after": folded or 0, "user": user},
    )
    return from_micros(max((v for v in (rolled, fresh) if v is not None), default=None))


@dataclass(frozen=True)
class Totals:
    findings: int
    users: int
    grants_checked: int
    by_kind: dict[str, int]

    def to_json(self) -> str:
        return json.dumps(
            {
                "findings": self.findings,
                "users": self.users,
                "grants_checked": self.grants_checked,
                "by_kind": self.by_kind,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str | None) -> Totals:
        data = json.loads(raw or "{}")
        return cls(
            int(data.get("findings", 0)),
            int(data.get("users", 0)),
            int(data.get("grants_checked", 0)),
            {k: int(data.get("by_kind", {}).get(k, 0)) for k in KINDS},
        )


# A live "Keep 30 days" of one kind of finding for the grant `g`.
_KEPT = (
    "EXISTS (SELECT 1 FROM review_keeps k WHERE k.grant_id = g.id "
    "AND k.kind = '{kind}' AND k.until > :now)"
)
# The findings, computed where the rows are: one INSERT ... SELECT gives each live
# grant at most one finding, the first that applies, and numbers them by holder.
# "Keep 30 days" silences the kind of finding it was given for (expiry excepted:
# keeping an expiring grant extends it instead).
_FINDINGS_INSERT = text(
    "INSERT INTO review_findings (review_id, position, kind, user_id, grant_id, role, scope, "
    "granted_at, expires_at, last_active_us, status) "
    "SELECT :review_id, ROW_NUMBER() OVER (ORDER BY c.user_id, c.role, c.scope), c.kind, "
    "c.user_id, c.id, c.role, c.scope, c.granted_at, c.expires_at, c.last_active_us, 'open' "
    "FROM (SELECT g.id, g.user_id, g.role, g.scope, g.granted_at, g.expires_at, "
    "a.last_active_us, CASE "
    "WHEN (NOT u.active OR s.user_id IS NOT NULL) AND NOT " + _KEPT.format(kind="deactivated") + " "
    "THEN 'deactivated' "
    "WHEN g.role IN :needs_2fa AND (f.user_id IS NULL OR NOT f.active) "
    "AND NOT " + _KEPT.format(kind="no_2fa") + " THEN 'no_2fa' "
    "WHEN g.granted_at < :cutoff AND (a.last_active_us IS NULL OR a.last_active_us < :cutoff_us) "
    "AND NOT " + _KEPT.format(kind="inactive") + " THEN 'inactive' "
    "WHEN g.expires_at IS NOT NULL AND g.expires_at <= :soon THEN 'expiring' "
    "END AS kind "
    "FROM grants g JOIN users u ON u.id = g.user_id "
    "LEFT JOIN user_activity a ON a.user_id = g.user_id "
    "LEFT JOIN second_factors f ON f.user_id = g.user_id "
    "LEFT JOIN review_slack_gone s ON s.user_id = g.user_id "
    "WHERE g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > :now)"
    ") c WHERE c.kind IS NOT NULL"
).bindparams(
    bindparam("needs_2fa", expanding=True, type_=String()),
    bindparam("cutoff", type_=UTCDateTime()),
    bindparam("now", type_=UTCDateTime()),
    bindparam("soon", type_=UTCDateTime()),
)
_LIVE_COUNT = text(
    "SELECT COUNT(*) FROM grants "
    "WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now)"
).bindparams(bindparam("now", type_=UTCDateTime()))
_COUNTS = text(
    "SELECT kind, COUNT(*) FROM review_findings WHERE review_id = :review_id GROUP BY kind"
)
_PEOPLE = text("SELECT COUNT(DISTINCT user_id) FROM review_findings WHERE review_id = :review_id")
# People Slack says are deactivated, for the statement above to join; per connection,
# emptied before each use (and on PostgreSQL at each commit).
_GONE_TABLE = "CREATE TEMP TABLE IF NOT EXISTS review_slack_gone (user_id VARCHAR(64) PRIMARY KEY)"
_GONE_INSERT = text("INSERT INTO review_slack_gone (user_id) VALUES (:user_id)")


def live_grants_query(now: datetime) -> Any:
    """Every live grant with what the review weighs it by (for the benchmark's baseline)."""
    g, u, a = _GRANTS, _USERS, _ACTIVITY
    return (
        select(g.c.id, g.c.user_id, g.c.role, g.c.scope, g.c.granted_at, g.c.expires_at)
        .add_columns(u.c.active, a.c.last_active_us)
        .select_from(g.join(u, u.c.id == g.c.user_id).outerjoin(a, a.c.user_id == g.c.user_id))
        .where(g.c.revoked_at.is_(None), or_(g.c.expires_at.is_(None), g.c.expires_at > now))
        .order_by(g.c.user_id, g.c.role, g.c.scope)
    )


def build_in(
    txn: Txn,
    review_id: int,
    *,
    now: datetime,
    deactivated_in_slack: Collection[str] = frozenset(),
) -> Totals:
    """Compute and store the findings of review `review_id` in `txn` (the gate's, for
    `review.build`); returns its totals.

    Only a review still being built is built: rebuilding replaces its findings,
    so a run that took a period over after another died half way starts clean,
    while a review already built (and perhaps posted, its buttons out) stays.
    """
    is_sqlite = txn.dialect_name == "sqlite"
    session = txn.session
    through = fold_activity(session)
    roles = Policy(load_roles(session), [])  # roles only: no grant is loaded
    needs_2fa = sorted(role for role in roles.roles if roles.requires_2fa(role))
    review = session.get(AccessReview, review_id)
    if review is None:
        raise LookupError(f"no access review #{review_id}")
    if review.status != "building":
        return Totals.from_json(review.totals)  # built already: its buttons may be out
    cutoff = now - timedelta(days=review.days)
    session.execute(delete(_FINDINGS).where(_FINDINGS.c.review_id == review_id))
    session.execute(text(_GONE_TABLE + (" ON COMMIT DELETE ROWS" if not is_sqlite else "")))
    session.execute(text("DELETE FROM review_slack_gone"))
    gone = sorted(set(deactivated_in_slack))
    for start in range(0, len(gone), BATCH):
        session.execute(_GONE_INSERT, [{"user_id": u} for u in gone[start : start + BATCH]])
    session.execute(
        _FINDINGS_INSERT,
        {
            "review_id": review_id,
            "needs_2fa": needs_2fa,
            "cutoff": cutoff,
            "cutoff_us": _us(cutoff),
            "now": now,
            "soon": now + EXPIRING_WITHIN,
        },
    )
    by_kind = dict.fromkeys(KINDS, 0)
    for kind, count in session.execute(_COUNTS, {"review_id": review_id}):
        by_kind[str(kind)] = int(count)
    people = int(session.scalar(_PEOPLE, {"review_id": review_id}) or 0)
    checked = int(session.scalar(_LIVE_COUNT, {"now": now}) or 0)
    if is_sqlite:
        session.execute(text("DELETE FROM review_slack_gone"))
    totals = Totals(sum(by_kind.values()), people, checked, by_kind)
    review.status = "ready"
    review.totals = totals.to_json()
    review.through_seq = through
    return totals
