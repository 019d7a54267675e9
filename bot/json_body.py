"""JSON from outside, parsed only once its signature held, and parsed defensively.

`json.loads` accepts what the databases and the rest of the code do not: nesting
deep enough to exhaust recursion further on, lone surrogates and NUL, which
PostgreSQL refuses and SQLite stores. Both surfaces' doors (Slack's payloads,
Meta's webhooks) parse with `load_json` and answer 400 to `Unreadable`.
"""

from __future__ import annotations

import json
import re
from typing import Any


class Unreadable(ValueError):
    """A signed body that is not JSON, or holds what no payload of Slack or Meta holds."""


# Deeper than any Slack payload (a modal's blocks reach about ten) or Meta webhook
# (about eight), and far below what makes Bolt's deep copy for lazy listeners run
# out of stack.
MAX_DEPTH = 40
# Escapes that decode to a lone surrogate (no UTF-8 for the database) or NUL
# (PostgreSQL refuses it in text). A pair of surrogates, an emoji, is fine.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def _strings_and_depth(value: Any) -> tuple[list[str], int]:
    strings: list[str] = []
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return strings, deepest


def load_json(text: str, *, plain_text: bool = True) -> Any:
    """`json.loads`, refusing nesting deeper than MAX_DEPTH and, unless `plain_text` is
    False, strings holding lone surrogates or NUL.

    Meta's webhook passes False: its bodies are stored as the text that came (where an
    escaped NUL is six harmless characters) and their strings cleaned when read
    (handlers/whatsapp/parsing.py), because refusing one bad string would refuse a
    whole signed batch of up to 1,000 updates, which Meta retries and then drops.
    """
    value = json.loads(text)
    suspect = plain_text and _SUSPECT_ESCAPE.search(text) is not None
    if suspect or text.count("{") + text.count("[") > MAX_DEPTH:
        strings, depth = _strings_and_depth(value)
        if depth > MAX_DEPTH:
            raise Unreadable(f"it is nested deeper than {MAX_DEPTH} levels")
        for string in strings if suspect else ():
            if "\x00" in string or (not string.isascii() and _bad_utf8(string)):
                raise Unreadable("it holds text that is not Unicode (NUL or a lone surrogate)")
    return value


def _bad_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
