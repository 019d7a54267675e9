"""`/wa-role create`, `edit` and `delete`: custom roles, their permissions and parents."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import (
    BuiltinRoleImmutable,
    DuplicateRole,
    InvalidInput,
    RoleCycle,
    RoleInUse,
    SelfGrant,
)
from ..gate import Action, Context, Data, Params, Prepared, Result, wire
from ..policy.catalogue import SENSITIVE_PERMISSIONS, check_permissions
from ..policy.grant_rules import ensure_holds
from ..store.models import (
    Grant,
    Role,
    RoleParent,
    RolePermission,
)
from ..values import (
    WILDCARD,
    clean_text,
    parse_flag,
    parse_role_name,
    scope_text,
)
from .granting import (
    as_list,
    get_role,
)


def _check_parents(session: Session, role_name: str, parents: Iterable[str]) -> list[str]:
    """Resolve parent roles and refuse any that would close a cycle through `role_name`."""
    resolved = [get_role(session, p).name for p in parents]
    edges: dict[str, list[str]] = {}
    for child, parent in session.execute(select(RoleParent.role, RoleParent.parent)):
        edges.setdefault(child, []).append(parent)
    for parent in resolved:
        stack, seen = [parent], set()
        while stack:
            current = stack.pop()
            if current == role_name:
                raise RoleCycle(
                    f"{role_name} cannot inherit from {parent}: {parent} already inherits "
                    f"from {role_name}, which would make a cycle"
                )
            if current not in seen:
                seen.add(current)
                stack.extend(edges.get(current, ()))
    return resolved


def _role_closure_perms(ctx: Context, own: set[str], parents: list[str]) -> set[str]:
    result = set(own)
    for parent in parents:
        result |= ctx.policy.permissions_of_role(parent)
    return result


@dataclass(frozen=True)
class CreateParams(Params):
    name: str | None = None
    perms: list[str] | str | None = None
    """Permission names, as a list or comma-separated."""
    inherits: list[str] | str | None = None
    """Parent roles, as a list or comma-separated."""
    two_fa: bool | str | None = wire("2fa")
    """Whether holders need 2FA: a bool, or on/off, yes/no, true/false."""
    from_: str | None = wire("from")
    """A role to copy: its permissions, parents and 2FA requirement."""
    description: str | None = None


@dataclass(frozen=True)
class RoleData(Data):
    """A role as it stands after a change."""

    role: str
    permissions: list[str]
    """Its own permissions."""
    inherits: list[str]


class CreateAction(Action[CreateParams]):
    name = "role.create"
    params_type = CreateParams
    mutates_policy = True

    def prepare(self, ctx: Context, params: CreateParams) -> Prepared:
        name = parse_role_name(params.name or "")
        if ctx.session.get(Role, name) is not None:
            raise DuplicateRole(f"a role named '{name}' already exists")
        perms = set(check_permissions(as_list(params.perms, "perms")))
        parents = as_list(params.inherits, "inherits")
        requires_2fa = bool(parse_flag(params.two_fa, "--2fa"))
        source = params.from_
        if source:
            base = get_role(ctx.session, source)
            perms |= {p.permission for p in base.permissions}
            parents += [p.parent for p in base.parents]
            requires_2fa = requires_2fa or base.requires_2fa
        parents = sorted(set(_check_parents(ctx.session, name, parents)))
        description = clean_text(params.description, "description", 500) or ""
        if not perms and not parents:
            raise InvalidInput(
                "a role needs permissions: give --perms p1,p2, --from ROLE or --inherits ROLE"
            )
        return Prepared(
            {
                "name": name,
                "perms": sorted(perms),
                "inherits": parents,
                "2fa": requires_2fa,
                "description": description,
                "from": source,
            },
            "roles:manage",
            WILDCARD,
            f"role:{name}",
            f"create role {name}",
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        p = prepared.params
        wanted = _role_closure_perms(ctx, set(p["perms"]), list(p["inherits"]))
        ensure_holds(ctx.policy, ctx.actor, wanted, WILDCARD, f"create role {p['name']}")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        role = Role(
            name=p["name"],
            description=p["description"],
            builtin=False,
            requires_2fa=p["2fa"],
            created_at=ctx.now,
            created_by=ctx.actor,
        )
        role.permissions = [RolePermission(role=p["name"], permission=x) for x in p["perms"]]
        role.parents = [RoleParent(role=p["name"], parent=x) for x in p["inherits"]]
        ctx.session.add(role)
        ctx.session.flush()
        inherits = f", inheriting {', '.join(p['inherits'])}" if p["inherits"] else ""
        return Result(
            f"Created role {p['name']} with {len(p['perms'])} permissions{inherits}"
            + (" (requires 2FA)" if p["2fa"] else "")
            + ".",
            data=RoleData(p["name"], list(p["perms"]), list(p["inherits"])),
        )


def _mutable_role(session: Session, name: str) -> Role:
    role = get_role(session, name)
    if role.builtin:
        raise BuiltinRoleImmutable(
            f"{role.name} is a built-in role and cannot be changed or deleted; "
            f"create a custom role instead (/wa-role create NAME --from {role.name})"
        )
    return role


@dataclass(frozen=True)
class EditParams(Params):
    name: str | None = None
    add: list[str] | str | None = None
    """Permissions to add, as a list or comma-separated."""
    remove: list[str] | str | None = None
    """Permissions to take away, as a list or comma-separated."""
    add_parents: list[str] | str | None = None
    """Roles to inherit from (`--inherits`), as a list or comma-separated."""
    remove_parents: list[str] | str | None = None
    """Roles to stop inheriting from (`--uninherit`), as a list or comma-separated."""
    two_fa: bool | str | None = wire("2fa")
    """Require 2FA of holders, or stop requiring it; unchanged when left out."""


class EditAction(Action[EditParams]):
    name = "role.edit"
    params_type = EditParams
    needs_confirmation = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: EditParams) -> Prepared:
        role = _mutable_role(ctx.session, params.name or "")
        add = sorted(check_permissions(as_list(params.add, "add")))
        remove = sorted(check_permissions(as_list(params.remove, "remove")))
        both = set(add) & set(remove)
        if both:
            raise InvalidInput(f"cannot both add and remove {', '.join(sorted(both))}")
        add_parents = sorted(
            set(_check_parents(ctx.session, role.name, as_list(params.add_parents, "inherits")))
        )
        remove_parents = sorted(
            get_role(ctx.session, r).name for r in as_list(params.remove_parents, "uninherit")
        )
        current_parents = {p.parent for p in role.parents}
        not_parents = sorted(set(remove_parents) - current_parents)
        if not_parents:
            raise InvalidInput(f"{role.name} does not inherit {', '.join(not_parents)}")
        two_fa = parse_flag(params.two_fa, "--2fa")
        if not (add or remove or add_parents or remove_parents or two_fa is not None):
            raise InvalidInput("nothing to change: give --add, --remove, --inherits or --2fa")
        own = {p.permission for p in role.permissions}
        unknown_removals = sorted(set(remove) - own)
        if unknown_removals:
            raise InvalidInput(f"{role.name} does not have {', '.join(unknown_removals)} to remove")
        parts = []
        if add:
            parts.append(f"add {', '.join(add)}")
        if remove:
            parts.append(f"remove {', '.join(remove)}")
        if add_parents:
            parts.append(f"inherit {', '.join(add_parents)}")
        if remove_parents:
            parts.append(f"stop inheriting {', '.join(remove_parents)}")
        if two_fa is not None:
            parts.append("require 2FA" if two_fa else "stop requiring 2FA")
        return Prepared(
            {
                "name": role.name,
                "add": add,
                "remove": remove,
                "add_parents": add_parents,
                "remove_parents": remove_parents,
                "2fa": two_fa,
            },
            "roles:manage",
            WILDCARD,
            f"role:{role.name}",
            f"edit role {role.name}: {'; '.join(parts)}",
            # Holders gain sensitive power, or lose the 2FA requirement: step up first.
            needs_step_up=bool(
                _role_closure_perms(ctx, set(add), add_parents) & SENSITIVE_PERMISSIONS
            )
            or any(ctx.policy.requires_2fa(parent) for parent in add_parents)
            or (two_fa is False and role.requires_2fa),
        )

    def check_rules(self, ctx: Context, prepared: Prepared) -> None:
        p = prepared.params
        adds = bool(p["add"] or p["add_parents"] or p.get("2fa") is False)
        if adds and p["name"] in ctx.policy.roles_held(ctx.actor):
            raise SelfGrant(
                f"You hold {p['name']}, so adding to it would change your own grants; "
                "ask another admin."
            )
        wanted = _role_closure_perms(ctx, set(p["add"]), list(p["add_parents"]))
        ensure_holds(ctx.policy, ctx.actor, wanted, WILDCARD, f"edit role {p['name']}")

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        p = prepared.params
        role = _mutable_role(ctx.session, p["name"])
        perms = ({x.permission for x in role.permissions} | set(p["add"])) - set(p["remove"])
        parents = ({x.parent for x in role.parents} | set(p["add_parents"])) - set(
            p["remove_parents"]
        )
        _check_parents(ctx.session, role.name, p["add_parents"])
        if not perms and not parents:
            raise InvalidInput(f"{role.name} would have no permissions left; delete it instead")
        role.permissions = [RolePermission(role=role.name, permission=x) for x in sorted(perms)]
        role.parents = [RoleParent(role=role.name, parent=x) for x in sorted(parents)]
        if p.get("2fa") is not None:
            role.requires_2fa = bool(p["2fa"])
        ctx.session.flush()
        return Result(
            f"Edited role {role.name}: now {len(perms)} permissions of its own"
            + (f", inheriting {', '.join(sorted(parents))}" if parents else "")
            + ".",
            data=RoleData(role.name, sorted(perms), sorted(parents)),
        )


@dataclass(frozen=True)
class DeleteParams(Params):
    name: str | None = None


@dataclass(frozen=True)
class DeletedRoleData(Data):
    role: str


class DeleteAction(Action[DeleteParams]):
    name = "role.delete"
    params_type = DeleteParams
    needs_confirmation = True
    mutates_policy = True

    def prepare(self, ctx: Context, params: DeleteParams) -> Prepared:
        role = _mutable_role(ctx.session, params.name or "")
        self._ensure_unused(ctx.session, role.name)
        return Prepared(
            {"name": role.name},
            "roles:manage",
            WILDCARD,
            f"role:{role.name}",
            f"delete role {role.name}",
        )

    @staticmethod
    def _ensure_unused(session: Session, name: str) -> None:
        holders = session.execute(
            select(Grant.id, Grant.user_id, Grant.scope)
            .where(Grant.role == name, Grant.revoked_at.is_(None))
            .order_by(Grant.id)
        ).all()
        if holders:
            listed = ", ".join(
                f"#{gid} {user} in {scope_text(scope)}" for gid, user, scope in holders[:10]
            )
            more = f" and {len(holders) - 10} more" if len(holders) > 10 else ""
            raise RoleInUse(
                f"role {name} is still held by {len(holders)} grant(s): {listed}{more}. "
                "Revoke them first."
            )
        children = session.scalars(select(RoleParent.role).where(RoleParent.parent == name)).all()
        if children:
            raise RoleInUse(
                f"role {name} is inherited by {', '.join(sorted(children))}; "
                "remove it from them first"
            )

    def execute(self, ctx: Context, prepared: Prepared) -> Result:
        role = _mutable_role(ctx.session, prepared.params["name"])
        self._ensure_unused(ctx.session, role.name)
        ctx.session.delete(role)
        ctx.session.flush()
        return Result(f"Deleted role {role.name}.", data=DeletedRoleData(role.name))
