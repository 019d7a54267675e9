"""Replies fit Slack's Block Kit limits and never let user text become markup."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from handlers.commands.roles import Reply
from handlers.slack.blocks import (
    BLOCK_LIMIT,
    SECTION_LIMIT,
    _chunks,
    _split,
    escape,
    mention_users,
    message,
)


def test_long_replies_are_split_into_sections_within_limits() -> None:
    text = "\n".join(f"line {i} " + "x" * 120 for i in range(1200)) + "\n" + "y" * 7000
    rendered = message(Reply("text", text))
    sections = [b["text"]["text"] for b in rendered["blocks"]]
    assert all(len(s) <= SECTION_LIMIT for s in sections)
    assert len(rendered["blocks"]) <= BLOCK_LIMIT
    assert "cut short" in sections[-1]
    assert len(rendered["text"]) <= SECTION_LIMIT


def test_a_short_reply_is_one_section_and_keeps_every_line() -> None:
    rendered = message(Reply("text", "a\nb\nc"))
    assert [b["text"]["text"] for b in rendered["blocks"]] == ["a\nb\nc"]


@given(st.text(alphabet="ab \n", max_size=40), st.integers(min_value=1, max_value=12))
def test_a_short_reply_takes_the_shortcut_to_the_same_sections(text: str, limit: int) -> None:
    """Most replies fit one section; the shortcut must split them as the full walk would."""
    assert _chunks(text, limit) == _split(text, limit)


def test_a_confirmation_carries_confirm_and_cancel_bound_to_the_pending_action() -> None:
    rendered = message(Reply("confirm", "Please confirm: x", pending_id="p-123"))
    actions = rendered["blocks"][-1]
    assert [e["value"] for e in actions["elements"]] == ["p-123", "p-123"]
    assert actions["elements"][0]["style"] == "primary"


def test_only_known_user_ids_become_mentions() -> None:
    text = "U0ALICE01 and UNKNOWNWORD and <@U0BOB0001>"
    assert mention_users(text, {"U0ALICE01", "U0BOB0001"}) == (
        "<@U0ALICE01> and UNKNOWNWORD and <@U0BOB0001>"
    )
    assert escape("<!here> & <http://x|y>") == "&lt;!here&gt; &amp; &lt;http://x|y&gt;"


def test_an_id_inside_a_longer_word_or_an_existing_mention_stays_as_it_is() -> None:
    text = "xU0ALICE01 U0ALICE012 <@U0ALICE01> @U0ALICE01 U0ALICE01_ (U0ALICE01)"
    assert mention_users(text, ["U0ALICE01"]) == (
        "xU0ALICE01 U0ALICE012 <@U0ALICE01> @U0ALICE01 U0ALICE01_ (<@U0ALICE01>)"
    )
    assert mention_users("U0AL and U0ALICE01", ["U0AL", "U0ALICE01"]) == (
        "<@U0AL> and <@U0ALICE01>"
    )
