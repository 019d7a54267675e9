"""wa-access's RBAC core: who may do what, decided, gated and audited.

Imports nothing from Slack, Flask, httpx or WhatsApp code; every surface talks
to it through `Gate`.
"""

from .actions import ROLE_ACTIONS
from .actions.access_requests import ACCESS_ACTIONS
from .actions.audit_log import AUDIT_ACTIONS
from .actions.directory import DIRECTORY_ACTIONS
from .actions.review_runs import REVIEW_RUN_ACTIONS
from .actions.reviews import REVIEW_ACTIONS
from .actions.sending import SEND_ACTIONS
from .actions.sweeps import SWEEP_ACTIONS
from .actions.twofa import TotpStepUp, twofa_actions
from .actions.webhooks import WEBHOOK_ACTIONS
from .audit.checkpoints import checkpoint_actions
from .audit.keys import Signer, chain_key
from .clock import Clock, ManualClock, system_clock
from .errors import RbacError
from .gate import Action, Context, Gate, Outcome, Prepared, Result, StepUp
from .policy import Decision, Policy, PolicyCache
from .secret_box import SecretBox
from .store.db import Database


def build_gate(
    db: Database,
    *,
    clock: Clock = system_clock,
    secret_key: str | None = None,
    step_up: StepUp | None = None,
) -> Gate:
    """The gate with every action the core defines, 2FA step-up by TOTP by default.

    `secret_key` (WA_SECRET_KEY) seals 2FA seeds, keys the audit chain's hashes
    and signs its checkpoints, each under a key of its own derived from it.
    """
    actions = {
        **ROLE_ACTIONS,
        **DIRECTORY_ACTIONS,
        **ACCESS_ACTIONS,
        **SWEEP_ACTIONS,
        **REVIEW_ACTIONS,
        **REVIEW_RUN_ACTIONS,
        **AUDIT_ACTIONS,
        **WEBHOOK_ACTIONS,
        **SEND_ACTIONS,
        **twofa_actions(SecretBox(secret_key)),
        **checkpoint_actions(Signer.optional(secret_key)),
    }
    return Gate(
        db,
        actions,
        clock=clock,
        step_up=step_up or TotpStepUp(),
        chain_key=chain_key(secret_key),
    )


__all__ = [
    "ROLE_ACTIONS",
    "Action",
    "Context",
    "Database",
    "Decision",
    "Gate",
    "ManualClock",
    "Outcome",
    "Policy",
    "PolicyCache",
    "Prepared",
    "RbacError",
    "Result",
    "StepUp",
    "build_gate",
    "system_clock",
]
