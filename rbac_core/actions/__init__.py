"""The actions, grouped by what they act on; each module's actions are listed here once."""

from typing import Any

from ..gate import Action
from .grant_actions import AssignAction, ListAction, RevokeAction, ShowAction, WhyAction
from .people import (
    BootstrapAdminAction,
    DeactivateUserAction,
    RegisterNumberAction,
    RegisterUserAction,
)
from .role_definitions import CreateAction, DeleteAction, EditAction

ROLE_ACTIONS: dict[str, Action[Any]] = {
    a.name: a
    for a in (
        ShowAction(),
        ListAction(),
        AssignAction(),
        RevokeAction(),
        CreateAction(),
        EditAction(),
        DeleteAction(),
        WhyAction(),
        BootstrapAdminAction(),
        RegisterUserAction(),
        RegisterNumberAction(),
        DeactivateUserAction(),
    )
}
