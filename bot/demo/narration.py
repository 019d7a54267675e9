"""How the demo speaks: numbered scenes, who said what to whom, and checks that can fail.

The demo is also a smoke test, so each scene checks what it must have
produced; a check that does not hold is printed with `✗` and makes the exit
code 1. Customers' numbers are masked in everything printed, as the product
masks them for people without `customers:view_pii`: a newcomer's screen or a
CI log is no place for them either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from rbac_core.values import masked_phone

WHO_WIDTH = 9  # "wa-access", the longest speaker


class Narrator:
    def __init__(self, out: TextIO, private_numbers: Iterable[str] = ()) -> None:
        self.out = out
        self.scene = 0
        self.checks = 0
        self.failures: list[str] = []
        # Longest first, and each with and without its "+" (Meta's wa_id has none).
        numbers = sorted({n.lstrip("+") for n in private_numbers}, key=len, reverse=True)
        self._masks = [(f"+{digits}", masked_phone(f"+{digits}")) for digits in numbers]
        self._masks += [(digits, masked_phone(f"+{digits}")) for digits in numbers]

    def mask(self, text: str) -> str:
        for number, shown in self._masks:
            text = text.replace(number, shown)
        return text

    def title(self, text: str) -> None:
        print(self.mask(text), file=self.out)

    def heading(self, title: str) -> None:
        self.scene += 1
        print(f"\n{self.scene}. {title}", file=self.out)

    def says(self, who: str, text: str) -> None:
        """`who → text`; a text of several lines keeps its lines, indented under the first."""
        lines = self.mask(text).strip("\n").splitlines() or [""]
        print(f"   {who:<{WHO_WIDTH}} → {lines[0]}", file=self.out)
        for line in lines[1:]:
            print(f"   {'':<{WHO_WIDTH}}   {line}", file=self.out)

    def note(self, text: str) -> None:
        for line in self.mask(text).splitlines():
            print(f"   {line}", file=self.out)

    def check(self, held: bool, what: str) -> bool:
        """Record one expectation; say it only when it did not hold."""
        self.checks += 1
        if not held:
            self.failures.append(what)
            print(f"   ✗ {self.mask(what)}", file=self.out)
        return held

    def fail(self, what: str) -> None:
        self.check(False, what)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0
