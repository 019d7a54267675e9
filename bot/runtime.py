"""Builds the long-lived objects a process needs from its settings."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.role_command import RoleCommand
from rbac_core import Database, Gate, build_gate
from rbac_core.clock import Clock, system_clock

from .config import Settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    gate: Gate
    roles: RoleCommand


def build_runtime(settings: Settings, clock: Clock = system_clock) -> Runtime:
    db = Database(settings.database_url)
    gate = build_gate(db, clock=clock)
    return Runtime(settings, db, gate, RoleCommand(gate))
