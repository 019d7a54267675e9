"""The policy: what roles hold, who holds them where, and the rules about resources.

`snapshot` is the immutable compiled policy (`Policy.decide`, memoised);
`loading` reads it from the database and keeps one fresh per process
(`PolicyCache`); `versions` is the version row every policy write bumps;
`relations` holds the rules that depend on who a resource belongs to;
`grant_rules` the rules any grant must pass (no escalation, last admin).
"""

from .loading import PolicyCache, load_grants, load_policy, load_roles
from .snapshot import (
    FOREVER,
    PARTIAL_RELOAD_MAX,
    Decision,
    GrantSpec,
    Policy,
    RoleSpec,
    role_closure,
)

__all__ = [
    "FOREVER",
    "PARTIAL_RELOAD_MAX",
    "Decision",
    "GrantSpec",
    "Policy",
    "PolicyCache",
    "RoleSpec",
    "load_grants",
    "load_policy",
    "load_roles",
    "role_closure",
]
