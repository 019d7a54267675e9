"""The demo from start to end: the stage set, the scenes played, everything taken down."""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from .later_scenes import SCENES as LATER
from .narration import Narrator
from .scenes import SCENES as FIRST
from .scenes import Story
from .stage import Cast, Stage, stage

SCENES = FIRST + LATER


SHELTERED = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "PROMETHEUS_MULTIPROC_DIR",
)
"""Variables the libraries under the app read for themselves: a proxy (slack_sdk and httpx
would send 127.0.0.1's requests through it) and `serve`'s shared counters directory (which
bot.metrics refuses to start without having set up). None of them may steer the demo."""


@contextmanager
def _sheltered() -> Iterator[None]:
    """Those variables set aside while the demo runs, and put back after."""
    kept = {name: os.environ.pop(name) for name in SHELTERED if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(kept)


def run(out: TextIO) -> int:
    with _sheltered():
        return _run(out)


def _run(out: TextIO) -> int:
    cast = Cast()
    say = Narrator(out, cast.customers)
    scratch: Path | None = None
    servers: list[str] = []
    try:
        with stage(cast) as world:
            scratch = world.scratch
            servers = [world.app_url, world.slack.base, world.graph.base]
            _introduce(world, say)
            story = Story()
            for scene in SCENES:
                scene(world, say, story)
    except Exception as exc:  # a product failure the scenes did not expect: say so, exit 1
        traceback.print_exc(file=sys.stderr)
        say.fail(f"the demo stopped in scene {say.scene}: {type(exc).__name__}: {exc}")
    say.title("")
    if scratch is not None:
        say.check(not scratch.exists(), f"the scratch directory {scratch} was left behind")
    for url in servers:
        say.check(not _answers(url), f"{url} still answers after the demo")
    if say.failures:
        say.title(f"✗ {len(say.failures)} of {say.checks} checks failed:")
        for failure in say.failures:
            say.title(f"  ✗ {failure}")
    else:
        say.title(
            f"All {say.checks} checks held. The servers are stopped and the scratch directory "
            "is removed."
        )
    return say.exit_code


def _answers(url: str) -> bool:
    host, _, port = url.removeprefix("http://").partition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:
        return False
    return True


def _introduce(world: Stage, say: Narrator) -> None:
    cast = world.cast
    say.title(
        "wa-access demo: the product end to end, on this machine, with a fake Slack and a fake Meta"
    )
    say.title(f"  fake Slack Web API  {world.slack.url}")
    say.title(f"  fake Graph API      {world.graph.url}")
    say.title(f"  wa-access           {world.app_url}  (SQLite in {world.scratch})")
    say.title(
        f"  people: @{cast.admin.name} ({cast.admin.id}), @{cast.alice.name} "
        f"({cast.alice.id}), @{cast.bob.name} ({cast.bob.id}); business number {cast.business}"
    )
    say.title("  Customers' numbers are shown masked, as wa-access shows them.")
