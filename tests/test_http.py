"""The Flask app: health check and JSON errors."""

from __future__ import annotations

from bot.app import create_app
from bot.config import Settings
from bot.runtime import build_runtime


def test_healthz_answers_once_the_database_does(db_url: str) -> None:
    app = create_app(build_runtime(Settings(database_url=db_url)))
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_is_503_with_json_when_the_database_is_down() -> None:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/x?connect_timeout=1")
    app = create_app(build_runtime(settings))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"


def test_unknown_routes_get_a_json_404(db_url: str) -> None:
    app = create_app(build_runtime(Settings(database_url=db_url)))
    response = app.test_client().get("/nope")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
