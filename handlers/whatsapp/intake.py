"""Stored webhook bodies turned into one gate call: their events, processed as Meta's webhooks.

The worker (bot/whatsapp/intake_worker.py) hands over bodies it holds under a
lease; this reads every event in them (parsing.py) and submits them to the gate
as `whatsapp.ingest` for `WEBHOOK` on the WhatsApp surface, with the lease
(owner, attempt of each body) that fences their completion. The gate's outcome
says whether the bodies are done, one was lost to another worker, or they must
be tried again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rbac_core.gate import Gate, Outcome
from rbac_core.messaging.events import Event, Malformed
from rbac_core.principals import WEBHOOK, Surface

from .parsing import events_of


def read_events(body: str) -> list[Event]:
    """Every event of a stored body; a body that is not JSON (the door never keeps one,
    but a row may have been written by hand) is one Malformed event, never an error."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return [Malformed("", "", {}, "the stored body is not a JSON object")]
    return list(events_of(payload))


def ingest(gate: Gate, owner: str, bodies: Sequence[tuple[int, int, str]]) -> Outcome:
    """Process `bodies` (id, attempt, body), held by `owner`, through the gate in one call."""
    params = {
        "webhooks": [webhook for webhook, _, _ in bodies],
        "attempts": [attempt for _, attempt, _ in bodies],
        "owner": owner,
        "events": [event for _, _, body in bodies for event in read_events(body)],
    }
    return gate.submit(WEBHOOK, Surface.WHATSAPP, "whatsapp.ingest", params)
