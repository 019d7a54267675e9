"""Serving the Flask app with gunicorn (threads per worker, no reloader).

Every process logs through bot/logs.py: the master (configured by the
`serve` command), each worker again after fork, and gunicorn's own lines (boot, worker exits) go
through the same handler instead of gunicorn's, so a JSON log stays JSON.

Counters are kept in prometheus_client's multiprocess files so that
`/metrics`, answered by whichever worker takes the scrape, adds up every
worker's (bot/metrics.py). The directory is prepared here, in the master,
before any worker exists and before prometheus_client is imported: the
operator's `PROMETHEUS_MULTIPROC_DIR`, emptied of an earlier run's files, or
else a new private one, removed when the master exits.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from .app import create_app
from .background_process import BackgroundProcess
from .config import Settings
from .logs import configure_logging
from .runtime import build_runtime

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as bot/metrics.py, which must not be imported here
log = logging.getLogger("wa_access.server")


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any], *, background: bool) -> None:
        self._settings = settings
        self._options = options
        # Opened here, in the master before any fork, so web workers inherit its wake pipe.
        self._background = BackgroundProcess(settings) if background else None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Built in each worker after fork: no connection is shared across processes.
        configure_logging(self._settings)
        runtime = build_runtime(self._settings)
        if self._background is not None:
            self._background.wake_on_commits()
        return create_app(runtime)

    def run(self) -> None:
        try:
            _Arbiter(self, self._background).run()
        except RuntimeError as exc:  # as gunicorn's own run(): a bad setting, said plainly
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.exit(1)


class _Arbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, which also keeps `serve`'s background process running."""

    def __init__(self, app: _Gunicorn, background: BackgroundProcess | None) -> None:
        self._background = background
        super().__init__(app)

    def handle_chld(self, *args: Any) -> None:  # (sig, frame) before gunicorn 23
        if self._background is not None:
            self._background.reap()  # before gunicorn's waitpid(-1) takes it as unknown
        super().handle_chld(*args)

    def manage_workers(self) -> None:
        super().manage_workers()
        if self._background is not None and self.pid == os.getpid():
            self._background.keep_running([s.fileno() for s in self.LISTENERS])

    def stop(self, graceful: bool = True) -> None:
        """The background process and the web workers stop side by side, within one
        graceful timeout: never one after the other."""
        if self._background is None:
            super().stop(graceful)
            return
        deadline = time.monotonic() + (self.cfg.graceful_timeout if graceful else 1.0)
        self._background.terminate()
        super().stop(graceful)
        self._background.wait(deadline)


class _RootLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, writing through the root logger's handler (bot/logs.py)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


class PinningUnavailable(RuntimeError):
    """This system does not let a process choose the CPUs it runs on."""


class CpuPinning:
    """`serve --pin-workers`: each web worker keeps to one CPU, the one fewest live workers use.

    A worker runs Python on one CPU at a time whatever it is allowed (the GIL),
    but left free its threads and the server's processes wander between CPUs,
    and each move, and each GIL handoff to a thread on another CPU, is paid in
    cold caches. On the benchmark's two CPUs (`python -m bench --only slack`)
    keeping each worker to a CPU of its own served a `/wa-role show` 1.3 to 1.4
    times as fast, a bare Flask 200 a few percent faster. Off by default: it is for a host or
    a cpuset the server has to itself. Where CPUs are shared by quota instead
    (most containers), every replica would crowd onto the same first CPUs.

    The CPUs are those the master may use; the background process and the
    master stay free to move. A worker replaced after dying takes the CPU it
    left, the least used then.
    """

    def __init__(self, cpus: Iterable[int]) -> None:
        self.cpus = sorted(cpus)
        if not self.cpus:
            raise ValueError("no CPU to pin workers to")

    @classmethod
    def of_this_process(cls) -> CpuPinning:
        get = getattr(os, "sched_getaffinity", None)
        if get is None or not hasattr(os, "sched_setaffinity"):
            raise PinningUnavailable(
                "--pin-workers needs a system that lets a process choose its CPUs (Linux)"
            )
        return cls(get(0))

    def choose(self, taken: Iterable[int | None]) -> int:
        """The CPU fewest of `taken` (the live workers' CPUs) use; the first such in order."""
        load = dict.fromkeys(self.cpus, 0)
        for cpu in taken:
            if cpu in load:
                load[cpu] += 1
        return min(self.cpus, key=lambda cpu: load[cpu])

    def pre_fork(self, arbiter: Any, worker: Any) -> None:
        """In the master, before the fork: the CPU of the worker about to start, among
        those the master may still use (a cpuset can shrink while the server runs)."""
        live = (getattr(w, _CPU, None) for w in arbiter.WORKERS.values())
        now = os.sched_getaffinity(0)  # type: ignore[attr-defined,unused-ignore]
        usable = now.intersection(self.cpus) or self.cpus
        setattr(worker, _CPU, CpuPinning(usable).choose(live))

    def post_fork(self, arbiter: Any, worker: Any) -> None:
        """In the new worker, before any thread of it exists: they all inherit its CPU.

        A CPU that cannot be had (gone offline since) leaves the worker unpinned: an
        error here would make gunicorn halt the whole server as a worker that cannot boot.
        """
        cpu = getattr(worker, _CPU)
        try:
            os.sched_setaffinity(0, {cpu})  # type: ignore[attr-defined,unused-ignore]
        except OSError as exc:
            log.warning("web worker %d runs on any CPU: CPU %d refused (%s)", os.getpid(), cpu, exc)
            return
        log.info("web worker %d keeps to CPU %d", os.getpid(), cpu)


_CPU = "wa_access_cpu"  # the attribute of gunicorn's Worker object holding its CPU


# prometheus_client's multiprocess files: counter_<pid>.db, gauge_livesum_<pid>.db, ...
_PROMETHEUS_FILE = re.compile(r"(counter|gauge_[a-z]+|histogram|summary)_[0-9]+\.db")


def prepare_metrics_dir(environ: MutableMapping[str, str] | None = None) -> tuple[Path, bool]:
    """The multiprocess directory for this run, and whether it was made here.

    Files left by an earlier run would add its counts to this one's (and a
    reused pid would continue them), so an operator's directory is emptied of
    them; a directory made here is private to this user.
    """
    env = os.environ if environ is None else environ
    given = env.get(MULTIPROC_ENV, "").strip()
    if not given:
        path = Path(tempfile.mkdtemp(prefix="wa-access-metrics-"))  # mode 0700
        env[MULTIPROC_ENV] = str(path)
        return path, True
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.iterdir():
        # Only prometheus_client's own files: pointed by mistake at the folder that
        # holds wa_access.db, this must not delete the database and its audit log.
        if _PROMETHEUS_FILE.fullmatch(stale.name) and stale.is_file():
            stale.unlink(missing_ok=True)
    return path, False


def _worker_exited(server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook, in the master: a dead worker's live gauges go.

    Its counters stay in the directory, so totals never go back.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    background: bool = True,
    pinning: CpuPinning | None = None,
) -> None:
    """Run gunicorn until it stops; the caller has configured logging (bot/logs.py)."""
    metrics_dir, made_here = prepare_metrics_dir()
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": 4,
        "worker_class": "gthread",
        "accesslog": None,  # bot/logs.py logs each request, with its id
        "logger_class": _RootLogger,
        "child_exit": _worker_exited,
        "timeout": 30,
    }
    if pinning is not None:
        options.update(pre_fork=pinning.pre_fork, post_fork=pinning.post_fork)
    master = os.getpid()
    try:
        _Gunicorn(settings, options, background=background).run()
    finally:
        # Workers leave through here too (gunicorn forks them from within run()).
        if made_here and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
