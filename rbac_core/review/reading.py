"""Reading an access review back: its findings, a page of them, all of them as CSV.

Building a review (building.py) writes its findings once; everything a
surface shows afterwards (a page of the report, the CSV in its thread, the
operator's listing) is read here.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from ..store.models import (
    AccessReview,
    ReviewFinding,
)
from .building import BATCH, PAGE_SIZE, Totals, from_micros


@dataclass(frozen=True)
class Finding:
    id: int
    position: int
    kind: str
    user: str
    grant_id: int
    role: str
    scope: str
    granted_at: datetime
    expires_at: datetime | None
    last_active_us: int | None
    status: str
    handled_by: str | None
    handled_at: datetime | None

    @property
    def last_active_at(self) -> datetime | None:
        return from_micros(self.last_active_us)

    @classmethod
    def of(cls, row: ReviewFinding) -> Finding:
        return cls(
            row.id,
            row.position,
            row.kind,
            row.user_id,
            row.grant_id,
            row.role,
            row.scope,
            row.granted_at,
            row.expires_at,
            row.last_active_us,
            row.status,
            row.handled_by,
            row.handled_at,
        )


@dataclass(frozen=True)
class Review:
    id: int
    period: str | None
    requested_by: str
    created_at: datetime
    days: int
    status: str
    totals: Totals
    channel: str | None
    message_ts: str | None

    @classmethod
    def of(cls, row: AccessReview) -> Review:
        return cls(
            row.id,
            row.period,
            row.requested_by,
            row.created_at,
            row.days,
            row.status,
            Totals.from_json(row.totals),
            row.channel,
            row.message_ts,
        )


@dataclass(frozen=True)
class Page:
    review: Review
    number: int  # from 0
    pages: int
    findings: list[Finding]


def read_page(session: Session, review_id: int, number: int, size: int = PAGE_SIZE) -> Page | None:
    """Page `number` of a review (clamped to the pages it has); None if no such review."""
    row = session.get(AccessReview, review_id)
    if row is None:
        return None
    review = Review.of(row)
    pages = max(1, -(-review.totals.findings // size))
    number = min(max(number, 0), pages - 1)
    findings = session.scalars(
        select(ReviewFinding)
        .where(
            ReviewFinding.review_id == review_id,
            ReviewFinding.position > number * size,
            ReviewFinding.position <= (number + 1) * size,
        )
        .order_by(ReviewFinding.position)
    ).all()
    return Page(review, number, pages, [Finding.of(f) for f in findings])


def page_of(position: int, size: int = PAGE_SIZE) -> int:
    return (position - 1) // size


CSV_COLUMNS = (
    "position",
    "finding",
    "user",
    "role",
    "scope",
    "grant_id",
    "granted_at",
    "expires_at",
    "last_active_at",
    "status",
    "handled_by",
    "handled_at",
)


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iter_findings(session: Session, review_id: int) -> Iterator[Finding]:
    """Every finding of a review in order, read in batches."""
    query = (
        select(ReviewFinding)
        .where(ReviewFinding.review_id == review_id)
        .order_by(ReviewFinding.position)
        .execution_options(yield_per=BATCH)
    )
    for row in session.scalars(query):
        yield Finding.of(row)


def write_csv(conn: Connection, review_id: int, out: IO[str]) -> int:
    """The whole review as CSV, streamed from `conn` (the snapshot `Gate.snapshot_for`
    hands out after `review.export`); returns the number of findings written."""
    with Session(bind=conn) as session:
        return write_csv_in(session, review_id, out)


def write_csv_in(session: Session, review_id: int, out: IO[str]) -> int:
    """The whole review as CSV; returns the number of findings written."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for f in iter_findings(session, review_id):
        writer.writerow(
            (
                f.position,
                f.kind,
                f.user,
                f.role,
                f.scope,
                f.grant_id,
                _iso(f.granted_at),
                _iso(f.expires_at),
                _iso(f.last_active_at),
                f.status,
                f.handled_by or "",
                _iso(f.handled_at),
            )
        )
        count += 1
    return count
