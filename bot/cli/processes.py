"""`wa-access serve`, `wa-access worker` and `wa-access scheduler`: the long-running processes.

`serve` alone is the whole product on one machine (SPEC §9): the HTTP
endpoints in gunicorn's web workers and, in one background process beside them,
the webhook intake, the outbox worker and the WhatsApp sender (bot/background_process.py).
`serve --no-worker` with separate `worker` and `scheduler` processes lets
operators split the work; any number of each share one PostgreSQL safely.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, TextIO

from ..config import SERVE_REQUIRES, Settings
from ..logs import configure_logging
from ..runtime import Runtime
from . import CliError, _runtime


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from ..server import CpuPinning, PinningUnavailable, serve

    try:
        pinning = CpuPinning.of_this_process() if args.pin_workers else None
    except PinningUnavailable as exc:
        raise CliError(str(exc)) from None
    runtime = _runtime(SERVE_REQUIRES)
    _require_policy_stamp(runtime)
    configure_logging(runtime.settings)  # the master's lines; each worker configures its own
    _say_what_will_not_work(runtime.settings)
    runtime.db.dispose()  # each gunicorn worker opens its own connections
    serve(
        runtime.settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        background=args.background,
        pinning=pinning,
    )
    return 0


def cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    from ..background import background_workers
    from ..polling import serve_pollers

    runtime = _runtime(("SLACK_BOT_TOKEN",))
    _require_policy_stamp(runtime)
    configure_logging(runtime.settings)
    workers = background_workers(runtime)
    if args.once:
        intake, outbox, *sender = workers
        processed = intake.run_until_idle()
        # Paced destinations free up within a second: wait for them, up to a minute.
        handled = outbox.run_until_idle(patience=60.0)  # type: ignore[call-arg]
        print(f"processed {processed} webhook bodies", file=out)
        print(f"delivered or settled {handled} outbox rows", file=out)
        if sender:
            print(f"sent or settled {sender[0].run_until_idle()} WhatsApp messages", file=out)
        else:
            print("WhatsApp messages: not sent (WHATSAPP_ACCESS_TOKEN is not set)", file=out)
        return 0
    serve_pollers(workers)
    return 0


def cmd_scheduler(args: argparse.Namespace, out: TextIO) -> int:
    from ..scheduler import build_scheduler
    from ..slack.app import slack_client

    runtime = _runtime(("SLACK_BOT_TOKEN", "WA_AUDIT_CHANNEL"))
    _require_policy_stamp(runtime)
    configure_logging(runtime.settings)
    if args.metrics_port is not None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # serve's files, not this process's
        from ..metrics import start_listener

        try:
            start_listener(args.metrics_host, args.metrics_port, runtime.settings.metrics_token)
        except OSError as exc:
            raise CliError(f"cannot serve metrics on port {args.metrics_port}: {exc}") from None
    build_scheduler(runtime, slack_client(runtime.settings)).serve()
    return 0


def _require_policy_stamp(runtime: Runtime) -> None:
    """Every policy change would be refused: say so now, not at the first one."""
    try:
        runtime.db.policy_stamp.check()
    except OSError as exc:
        raise CliError(
            f"policy changes could not be announced to this machine's other processes: {exc}"
        ) from None


def _say_what_will_not_work(settings: Settings) -> None:
    """One line each, before serving: what a newcomer would otherwise learn from failures."""
    from ..slack.app import slack_client
    from ..slack.token import check_token

    log = logging.getLogger("wa_access.serve")
    if not settings.secret_key:
        log.warning(
            "WA_SECRET_KEY is not set: nobody can turn on 2FA, so sensitive actions and "
            "roles that require 2FA (admin, developer) are refused, and the audit chain "
            "is neither keyed nor checkpointed"
        )
    if settings.whatsapp_app_secret and not settings.whatsapp_access_token:
        log.warning(
            "WHATSAPP_ACCESS_TOKEN is not set: webhooks are received and processed, but "
            "WhatsApp messages stay queued until it is"
        )
    check = check_token(slack_client(settings))
    log.log(logging.INFO if check.ok else logging.ERROR, "%s", check.line)


def _port(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 5 and 1 <= int(value) <= 65535):
        raise argparse.ArgumentTypeError("expected a port number from 1 to 65535")
    return int(value)


def add_commands(sub: Any) -> None:
    """`serve`, `worker` and `scheduler`, added to the top-level subparsers."""
    serve = sub.add_parser(
        "serve",
        help="serve Slack's and WhatsApp's endpoints, /healthz and /metrics with gunicorn; "
        "process webhooks and deliver the outbox",
        description="Needs SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument("--port", type=_port, default=3000, help="port (default: %(default)s)")
    serve.add_argument(
        "--workers",
        type=int,
        default=2,
        help="gunicorn worker processes, 4 threads each (default: %(default)s)",
    )
    serve.add_argument(
        "--no-worker",
        dest="background",
        action="store_false",
        help="do not process webhooks or deliver the outbox here (run `wa-access worker`)",
    )
    serve.add_argument(
        "--pin-workers",
        action="store_true",
        help="keep each web worker on one CPU of those this process may use: faster on a "
        "host or cpuset of its own; leave it off where CPUs are shared by quota (most "
        "containers)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser(
        "worker",
        help="process stored webhooks and deliver the outbox until stopped",
        description="Needs SLACK_BOT_TOKEN. Any number of workers may run against one database.",
    )
    worker.add_argument(
        "--once", action="store_true", help="process and deliver what is due now, then exit"
    )
    worker.set_defaults(func=cmd_worker)

    sched = sub.add_parser("scheduler", help="run the weekly access review and expiry sweeps")
    sched.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve GET /metrics on this port"
    )
    sched.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the address for --metrics-port (default: %(default)s)",
    )
    sched.set_defaults(func=cmd_scheduler)
