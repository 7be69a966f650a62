"""Helpers shared by the test modules (imported as `support`, not from conftest:
the bundled plugins have conftest modules of their own)."""
from __future__ import annotations

import re
import secrets

ADMIN_PASSWORD = secrets.token_urlsafe(12)  # generated per test session; never a fixed password


def csrf_token(client, url: str) -> str:
    """The CSRF token embedded in the page at ``url`` (forms carry it as a hidden input)."""
    html = client.get(url).get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def login(client, username: str = "admin", password: str = ADMIN_PASSWORD):
    token = csrf_token(client, "/login/")
    resp = client.post("/login/", data={"username": username, "password": password, "csrf_token": token})
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"], "login failed"
    return client


class Api:
    """A REST client authenticated with a JWT bearer token (as scripts use the API)."""

    def __init__(self, client, token: str):
        self.client, self.headers = client, {"Authorization": f"Bearer {token}"}

    def __getattr__(self, method):
        def call(url, **kw):
            return getattr(self.client, method)(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)
        return call


def sign_in(app, username: str = "admin", password: str = ADMIN_PASSWORD) -> Api:
    """A fresh test client of ``app`` holding ``username``'s access token (POST /api/v1/security/login)."""
    client = app.test_client()
    resp = client.post("/api/v1/security/login", json={"username": username, "password": password, "provider": "db"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return Api(client, resp.json["access_token"])
