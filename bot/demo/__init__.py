"""What `wa-access demo` runs: local fakes of Slack's and Meta's APIs, and the narrated flow."""

from __future__ import annotations

from typing import TextIO


def run_demo(out: TextIO) -> int:
    """The whole flow, narrated to `out`: 0 when every check held, 1 otherwise."""
    # Imported here: the fakes in this package are imported by tests on their own,
    # without the app.
    from .show import run

    return run(out)
