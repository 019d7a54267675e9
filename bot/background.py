"""The background workers a process runs: `serve`'s background process (unless
`--no-worker`; bot/background_process.py) and `wa-access worker`."""

from __future__ import annotations

from .outbox_worker import build_worker
from .polling import Poller
from .runtime import Runtime
from .whatsapp.intake_worker import IntakeWorker


def background_workers(runtime: Runtime) -> list[Poller]:
    """The outbox's Slack deliveries, the webhook intake and, once WhatsApp can be
    reached (`WHATSAPP_ACCESS_TOKEN`), the sender: each woken by its own process's
    commits, and polling for what other processes wrote."""
    workers: list[Poller] = [
        IntakeWorker(runtime.webhooks, runtime.gate, runtime.outbox),
        build_worker(runtime.settings, runtime.outbox),
    ]
    sender = whatsapp_sender(runtime)
    if sender is not None:
        workers.append(sender)
    return workers


def whatsapp_sender(runtime: Runtime) -> Poller | None:
    """The WhatsApp sender, or None while `WHATSAPP_ACCESS_TOKEN` is unset (messages queued
    meanwhile wait for it; `serve` says so at start)."""
    settings = runtime.settings
    if not settings.whatsapp_access_token:
        return None
    from .whatsapp.graph import GraphClient
    from .whatsapp.sender import WhatsAppSender

    graph = GraphClient(settings.whatsapp_api_url, settings.whatsapp_access_token)
    return WhatsAppSender(runtime.db, graph, default_rate=settings.send_rate)
