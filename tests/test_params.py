"""Typed params and results: each action's fields are its schema, checked by the gate."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rbac_core import Database, Gate
from rbac_core.errors import InvalidInput
from rbac_core.gate import Data, NoParams, Params, wire
from rbac_core.principals import Surface

from .conftest import ADMIN, ALICE
from .helpers import audit_rows, live_grants, run


@dataclass(frozen=True)
class Sample(Params):
    user: str | None = None
    page: int | str | None = None
    for_: str | None = wire("for")
    tags: list[str] | None = None
    flag: bool | str | None = None


@dataclass(frozen=True)
class Shown(Data):
    user: str
    count: int


def test_params_parse_what_a_surface_sends_under_its_wire_names() -> None:
    parsed = Sample.parse({"user": ALICE, "page": "3", "for": "4h", "tags": ("a", "b")})
    assert parsed == Sample(user=ALICE, page="3", for_="4h", tags=["a", "b"])
    assert parsed.as_dict() == {"user": ALICE, "page": "3", "for": "4h", "tags": ["a", "b"]}
    assert Sample.parse(parsed.as_dict()) == parsed
    assert Sample.parse({"page": 3, "flag": True}) == Sample(page=3, flag=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"usr": ALICE}, "This request takes no `usr`."),
        ({"for_": "4h"}, "This request takes no `for_`."),
        ({"user": {"$ne": 1}}, "`user` must be text."),
        ({"user": 7}, "`user` must be text."),
        ({"page": True}, "`page` must be a whole number or text."),
        ({"page": 1.5}, "`page` must be a whole number or text."),
        ({"tags": ["a", 2]}, "`tags` must be a list of text."),
        ({"tags": "a,b"}, "`tags` must be a list of text."),
        ({"flag": 1}, "`flag` must be yes or no or text."),
    ],
)
def test_unknown_fields_and_wrong_types_are_refused_by_name(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        Sample.parse(raw)
    assert refused.value.message == message


def test_a_field_left_out_is_none_and_nothing_is_not_sent() -> None:
    assert Sample.parse({}) == Sample()
    assert Sample().as_dict() == {}
    assert NoParams.parse({}) == NoParams()


def test_the_spec_lists_every_field_with_its_wire_name_and_types() -> None:
    spec = {s.name: (s.attr, s.types, s.items) for s in Sample.spec()}
    assert spec == {
        "user": ("user", (str,), ()),
        "page": ("page", (int, str), ()),
        "for": ("for_", (str,), ()),
        "tags": ("tags", (list,), (str,)),
        "flag": ("flag", (bool, str), ()),
    }


def test_data_is_a_dataclass_that_reads_as_a_mapping_of_its_fields() -> None:
    shown = Shown(ALICE, 2)
    assert (shown.user, shown["count"], shown.get("missing")) == (ALICE, 2, None)
    assert dict(shown) == shown.as_dict() == {"user": ALICE, "count": 2}
    with pytest.raises(KeyError):
        shown["as_dict"]


def test_every_action_declares_its_params_and_each_field_has_a_type(gate: Gate) -> None:
    for name, action in gate.actions.items():
        assert issubclass(action.params_type, Params), name
        for field in action.params_type.spec():
            assert field.types, f"{name}.{field.name} accepts anything"


def test_the_gate_refuses_an_unknown_param_and_audits_it(
    gate: Gate, db: Database, team: dict[str, str]
) -> None:
    outcome = gate.submit(
        ADMIN, Surface.API, "role.assign", {"user": ALICE, "role": "agent", "nubmer": "*"}
    )
    assert (outcome.status, outcome.error_code) == ("invalid", "unexpected_param")
    assert outcome.message == "This request takes no `nubmer`."
    assert live_grants(db, ALICE) == []
    entry = audit_rows(db)[-1]
    assert (entry.action, entry.decision, entry.outcome) == ("role.assign", "deny", "invalid")


def test_an_action_gives_back_its_typed_data(gate: Gate, team: dict[str, str]) -> None:
    from rbac_core.actions.grant_actions import ShowData

    outcome = gate.submit(ADMIN, Surface.API, "role.show", {})
    assert isinstance(outcome.data, ShowData)
    assert outcome.data.user == ADMIN
    assert [g.role for g in outcome.data.grants] == ["admin"]


def test_a_result_goes_on_the_wire_whole_under_its_wire_names(
    gate: Gate, team: dict[str, str]
) -> None:
    import json

    shown = gate.submit(ADMIN, Surface.API, "role.show", {}).data.to_wire()
    assert json.loads(json.dumps(shown)) == shown
    assert shown["grants"][0]["role"] == "admin"
    assert run(gate, ADMIN, "role.assign", user=ALICE, role="support").ok
    asked = gate.submit(
        ALICE, Surface.API, "access.request", {"role": "agent", "for": "4h", "reason": "cover"}
    )
    assert asked.ok, asked.message
    assert asked.data.to_wire()["for"] == "4h"
    assert "for_" not in asked.data.to_wire()


def test_a_result_field_may_not_shadow_the_mapping_it_reads_as() -> None:
    with pytest.raises(TypeError, match="shadow"):

        @dataclass(frozen=True)
        class Clashing(Data):
            items: list[str]


def test_a_request_of_any_shape_is_refused_and_audited_within_bounds(
    gate: Gate, db: Database, team: dict[str, str]
) -> None:
    """An HTTP API will hand JSON bodies straight to the gate: nesting, width and length
    can neither crash the audit writer nor make an entry huge."""
    deep: object = "x"
    for _ in range(500):
        deep = [deep]
    wide = {f"k{i}": "v" * 10_000 for i in range(2_000)}
    for params in ({"user": deep}, wide, {"reason": "r" * 3_000_000, "role": [[["x"] * 100]]}):
        outcome = gate.submit(ADMIN, Surface.API, "role.assign", params)
        assert outcome.status == "invalid", outcome
        entry = audit_rows(db)[-1]
        assert (entry.action, entry.outcome) == ("role.assign", "invalid")
        assert len(entry.details) < 5_000
    # Refused by the schema: only the names are kept, never the values.
    refused = gate.submit(ALICE, Surface.API, "2fa.verify", {"Code": "492039"})
    assert refused.error_code == "unexpected_param"
    assert "492039" not in audit_rows(db)[-1].details
