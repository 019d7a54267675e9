"""Serving the Flask app with gunicorn (threads per worker, no reloader)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from .app import create_app
from .config import Settings
from .runtime import build_runtime


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Built in each worker after fork: no connection is shared across processes.
        return create_app(build_runtime(self._settings))


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": 4,
        "worker_class": "gthread",
        "accesslog": None,
        "timeout": 30,
    }
    _Gunicorn(settings, options).run()
