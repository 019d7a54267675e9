"""A small parser for the slash-command grammar of SPEC §5.

Commands are declared as data (positionals, options, usage line), so `help`,
usage errors and parsing all come from one description. Everything wrong with
the input becomes a `UsageError` naming the problem and showing the usage line;
nothing here raises anything else, whatever the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

OptionKind = Literal["value", "text", "flag", "list", "toggle"]

_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|[^>]*)?>")
_BARE_ID = re.compile(r"@?([UW][A-Z0-9]{2,20})")
# Slack clients may turn typed quotes into typographic ones.
_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
_TOKEN = re.compile(r'(?:[^\s"]|"[^"]*")+')
MAX_TEXT = 4000


class UsageError(Exception):
    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage

    def render(self) -> str:
        return f"{self.message}\nUsage: {self.usage}" if self.usage else self.message


@dataclass(frozen=True)
class Option:
    name: str
    kind: OptionKind = "value"
    param: str | None = None

    @property
    def key(self) -> str:
        return self.param or self.name


@dataclass(frozen=True)
class Subcommand:
    name: str
    action: str
    usage: str
    summary: str
    positionals: tuple[tuple[str, Literal["user", "word"], bool], ...] = ()
    options: tuple[Option, ...] = ()
    permission: str | None = None

    @property
    def per_number(self) -> bool:
        """Whether the action checks its permission in the number given by `--number`
        (or everywhere without it); otherwise it checks it everywhere."""
        return any(option.key == "number" for option in self.options)


@dataclass(frozen=True)
class Parsed:
    subcommand: Subcommand
    params: dict[str, object]


def mentioned_users(text: str) -> set[str]:
    """Every user id mentioned in escaped form (`<@U…>` or `<@U…|name>`) in `text`."""
    return {m.group(1) for m in _MENTION.finditer(text)}


NameLookup = Callable[[str], str]
"""A surface's way to turn a registered name into a user id, or raise UsageError."""


def parse_user(token: str, names: NameLookup | None = None) -> str:
    """An escaped Slack mention or a bare user id; a `@name` only where the surface
    can look names up (the console: Slack sends mentions escaped, with their id)."""
    match = _MENTION.fullmatch(token) or _BARE_ID.fullmatch(token)
    if match:
        return match.group(1)
    if names is not None and token.startswith("@") and len(token) > 1:
        return names(token[1:])
    if token.startswith("@") or token.startswith("<@"):
        raise UsageError(
            f"'{token}' is not a mention wa-access can read: pick the person from Slack's "
            "autocomplete so the mention carries their user id"
        )
    raise UsageError(f"'{token}' is not a user: mention them, e.g. @alice")


def tokenize(text: str) -> list[str]:
    """Split on whitespace; only double quotes group words.

    Apostrophes are ordinary letters ("covering Bob's shift") and backslashes
    are kept as typed: this is chat text, not a shell.
    """
    if len(text) > MAX_TEXT:
        raise UsageError(f"the command is too long ({len(text)} characters, at most {MAX_TEXT})")
    cleaned = text.translate(_SMART_QUOTES).replace("\x00", "")
    if cleaned.count('"') % 2:
        raise UsageError("a quotation mark is not closed")
    return [token.replace('"', "") for token in _TOKEN.findall(cleaned)]


def parse(
    command: str, text: str, subcommands: Sequence[Subcommand], names: NameLookup | None = None
) -> Parsed | None:
    """Parse `text`; returns None for help (no text or `help`)."""
    tokens = tokenize(text)
    if not tokens or tokens[0].lower() in ("help", "-h", "--help"):
        return None
    by_name = {s.name: s for s in subcommands}
    sub = by_name.get(tokens[0].lower())
    if sub is None:
        known = " | ".join(s.name for s in subcommands)
        raise UsageError(
            f"unknown subcommand '{tokens[0]}' for {command}", f"{command} {known} | help"
        )
    return Parsed(sub, _parse_args(sub, tokens[1:], names))


def _parse_args(
    sub: Subcommand, tokens: list[str], names: NameLookup | None = None
) -> dict[str, object]:
    options = {o.name: o for o in sub.options}
    params: dict[str, object] = {}
    positionals: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--") and len(token) > 2:
            name, _, inline = token[2:].partition("=")
            option = options.get(name.lower())
            if option is None:
                raise UsageError(f"unknown option --{name} for {sub.name}", sub.usage)
            if option.key in params:
                raise UsageError(f"--{option.name} is given twice", sub.usage)
            i += 1
            if option.kind == "flag":
                if inline:
                    raise UsageError(f"--{option.name} takes no value", sub.usage)
                params[option.key] = True
                continue
            values: list[str] = [inline] if inline else []
            if option.kind == "text":
                while i < len(tokens) and not tokens[i].startswith("--"):
                    values.append(tokens[i])
                    i += 1
            elif not values and i < len(tokens) and not tokens[i].startswith("--"):
                values.append(tokens[i])
                i += 1
            value = " ".join(values).strip()
            if not value:
                raise UsageError(f"--{option.name} needs a value", sub.usage)
            if option.kind == "toggle":
                lowered = value.lower()
                if lowered not in ("on", "off", "yes", "no", "true", "false"):
                    raise UsageError(f"--{option.name} takes on or off", sub.usage)
                params[option.key] = lowered in ("on", "yes", "true")
            elif option.kind == "list":
                params[option.key] = [v for v in re.split(r"[,\s]+", value) if v]
            else:
                params[option.key] = value
            continue
        positionals.append(token)
        i += 1
    wanted = sub.positionals
    if len(positionals) > len(wanted):
        extra = " ".join(positionals[len(wanted) :])
        raise UsageError(f"unexpected '{extra}'", sub.usage)
    for index, (key, kind, required) in enumerate(wanted):
        if index >= len(positionals):
            if required:
                raise UsageError(f"missing {key.upper()}", sub.usage)
            continue
        value = positionals[index]
        if kind == "user":
            try:
                params[key] = parse_user(value, names)
            except UsageError as exc:
                raise UsageError(exc.message, sub.usage) from None
        else:
            params[key] = value
    return params
