"""Helpers for plugin authors' tests: an app with just your plugin, on SQLite in a temporary directory.

    from crm_meta.testing import api_client, login, make_app

    def test_my_plugin(tmp_path):
        app = make_app(tmp_path, plugins=["crm_birthday"])      # a bundled/installed plugin, by name
        app = make_app(tmp_path, plugins=[my_module_or_object])  # or any object holding hookimpls
        api = api_client(app)                                    # REST as the admin (JWT)
        assert api.get("/api/v1/contact/").status_code == 200
        client = login(app.test_client(), app)                   # screens as the admin (cookie + CSRF)

Only the plugins given are enabled (built-ins stay on); the default dictionary ``schemas/`` is used
unless ``schemas`` names other files or directories. An ``admin`` user is created; its password is
``app.config["CRM_ADMIN_PASSWORD"]``.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any, Iterable

from flask import Flask

from crm_meta.plugins import plugin_name_of

__all__ = ["make_app", "login", "api_client", "csrf_token", "dispose", "ApiClient"]


def make_app(tmp_path: str | Path, plugins: Iterable[Any] = (), schemas: str | Path | Iterable[str | Path] | None = None,
             **config: Any) -> Flask:
    """A CRM app on ``tmp_path/crm.db`` with only ``plugins`` enabled; ``config`` overrides any key."""
    from crm_meta.cli import ensure_admin
    from crm_meta.web.factory import create_app

    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    enabled, objects = [], []
    for plugin in plugins:
        if isinstance(plugin, str):
            enabled.append(plugin)
        else:
            name, obj = plugin if isinstance(plugin, tuple) else (plugin_name_of(plugin), plugin)
            enabled.append(name)
            objects.append((name, obj))
    password = config.pop("CRM_ADMIN_PASSWORD", None) or secrets.token_urlsafe(12)
    cfg: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'crm.db'}",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "SECRET_KEY": secrets.token_hex(16),
        "TESTING": True,
        "CRM_ADMIN_PASSWORD": password,
        "CRM_PLUGINS": enabled,  # a list: exactly these (an empty list: none besides the built-ins)
        "CRM_EXTRA_PLUGINS": objects,
    }
    if schemas is not None:
        cfg["CRM_SCHEMA_PATH"] = [str(schemas)] if isinstance(schemas, (str, Path)) else [str(s) for s in schemas]
    cfg.update(config)
    app = create_app(cfg)
    with app.app_context():
        ensure_admin(password)
    return app


def dispose(app: Flask) -> None:
    """Close the app's database connections (PostgreSQL tests drop their database afterwards)."""
    from crm_meta.web.live import shutdown

    shutdown(app)


def csrf_token(client, url: str) -> str:
    """The CSRF token of the form on the page at ``url``."""
    html = client.get(url).get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    if not match:
        raise AssertionError(f"no CSRF token on {url}")
    return match.group(1)


def login(client, app: Flask, username: str = "admin", password: str | None = None):
    """Sign ``client`` in through the login form (as the admin by default); returns the client."""
    token = csrf_token(client, "/login/")
    resp = client.post("/login/", data={"username": username, "csrf_token": token,
                                         "password": password or app.config["CRM_ADMIN_PASSWORD"]})
    if resp.status_code != 302 or "/login" in resp.headers.get("Location", ""):
        raise AssertionError(f"login as {username} failed")
    return client


class ApiClient:
    """A test client that sends a JWT bearer token with every request (``api.get(url)``, ``api.post(url, json=…)``)."""

    def __init__(self, client, token: str):
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}

    def __getattr__(self, method: str):
        def call(url, **kw):
            return getattr(self.client, method)(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)
        return call


def api_client(app: Flask, username: str = "admin", password: str | None = None) -> ApiClient:
    client = app.test_client()
    resp = client.post("/api/v1/security/login", json={
        "username": username, "password": password or app.config["CRM_ADMIN_PASSWORD"], "provider": "db"})
    if resp.status_code != 200:
        raise AssertionError(f"API login as {username} failed: {resp.get_data(as_text=True)}")
    return ApiClient(client, resp.json["access_token"])
