"""Builds the long-lived objects a process needs from its settings."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.commands.audit import AuditCommand
from handlers.commands.roles import RoleCommand
from handlers.commands.send import SendCommand
from handlers.commands.twofa import TwoFactorCommand
from rbac_core import Database, Gate, build_gate
from rbac_core.clock import Clock, system_clock
from rbac_core.outbox import Outbox
from rbac_core.store.inbound import InboundEvents
from rbac_core.store.webhook_inbox import WebhookInbox

from .config import Settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    gate: Gate
    roles: RoleCommand
    twofa: TwoFactorCommand
    inbound: InboundEvents
    audit: AuditCommand
    outbox: Outbox
    webhooks: WebhookInbox
    send: SendCommand


def build_runtime(settings: Settings, clock: Clock = system_clock) -> Runtime:
    db = Database(settings.database_url)
    gate = build_gate(db, clock=clock, secret_key=settings.secret_key)
    return Runtime(
        settings,
        db,
        gate,
        RoleCommand(gate),
        TwoFactorCommand(gate),
        InboundEvents(db, clock),
        AuditCommand(gate),
        Outbox(db, clock),
        WebhookInbox(db, clock),
        SendCommand(gate),
    )
