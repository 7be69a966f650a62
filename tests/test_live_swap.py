"""A schema change goes live in every worker of a real multi-worker server, with no failed request.

The test starts gunicorn with two workers on the test's database, keeps requests flowing from a
background thread, adds a custom field, then hits the server until both workers (told apart by
the pid gunicorn writes in its access log) have served the field on the form, the list, the REST
API and the OpenAPI document. A form opened before the change is posted after it and saves.
"""
from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Live-" + secrets.token_urlsafe(12)
FIELD = "wechat_id"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """A cookie-keeping HTTP client (a user's browser session)."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect())

    def request(self, path: str, data: dict | None = None, headers: dict | None = None, body: bytes | None = None):
        if data is not None:
            body = urllib.parse.urlencode(data, doseq=True).encode()
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)

    def csrf(self, path: str) -> tuple[str, str]:
        status, html, _ = self.request(path)
        assert status == 200, (path, status, html[:300])
        m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or \
            re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
        assert m, f"no CSRF token on {path}"
        return m.group(1), html

    def login(self, username: str, password: str) -> None:
        token, _ = self.csrf("/login/")
        status, _, headers = self.request("/login/", {"username": username, "password": password, "csrf_token": token})
        assert status == 302 and "/login" not in headers.get("Location", ""), "login failed"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _token(base: str) -> str:
    req = urllib.request.Request(base + "/api/v1/security/login", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": "admin", "password": PASSWORD,
                                                  "provider": "db"}).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["access_token"]


@pytest.fixture
def gunicorn_server(db_url, tmp_path):
    """gunicorn -w 2 on the test's database (initialised once before the workers fork)."""
    env = {**os.environ, "CRM_DATABASE_URL": db_url, "CRM_SECRET_KEY": secrets.token_hex(16),
           "CRM_ADMIN_PASSWORD": PASSWORD}
    instance = tmp_path / "instance"
    instance.mkdir()
    bindir = Path(sys.executable).parent
    init = subprocess.run([str(bindir / "flask"), "--app", "app", "crm", "init"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr
    port = _free_port()
    log = tmp_path / "access.log"
    proc = subprocess.Popen(
        [str(bindir / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}", "--no-control-socket",
         "--access-logfile", str(log), "--access-logformat", "%(p)s %(m)s %(U)s %(q)s %(s)s", "app:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gunicorn.err", "w"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(base + "/login/", timeout=5).read()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("gunicorn did not start: " + (tmp_path / "gunicorn.err").read_text()[-2000:])
            time.sleep(0.3)
    try:
        yield base, log, env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _add_field_through_screen(admin: Browser) -> None:
    from schema_screen import add_custom_field

    add_custom_field(admin, "customer", FIELD, "微信号", "WeChat ID")


def test_a_custom_field_goes_live_in_both_workers_without_a_failed_request(gunicorn_server):
    base, log, env = gunicorn_server
    token = _token(base)
    bearer = {"Authorization": f"Bearer {token}"}

    # Keep requests flowing while the change happens: every one must succeed.
    failures: list[str] = []
    stop = threading.Event()
    served: list[tuple[float, bool]] = []  # (when the request started, whether it showed the field)

    def hammer():
        client = Browser(base)
        while not stop.is_set():
            for path in ("/api/v1/customer/_info", "/api/v1/customer/?q=(page_size:5)"):
                started = time.monotonic()
                status, body, _ = client.request(path, headers=bearer)
                if status != 200:
                    failures.append(f"{path}: {status} {body[:200]}")
                elif path.endswith("_info"):
                    served.append((started, FIELD in body))

    # A customer, so that the list shows its columns.
    status, body, _ = Browser(base).request("/api/v1/customer/", headers={**bearer, "Content-Type": "application/json"},
                                            body=json.dumps({"name": "杭州多进程测试有限公司", "customer_type": "prospect",
                                                             "industry": "retail", "contact_name": "赵六",
                                                             "contact_phone": "13600000000"}).encode())
    assert status == 201, body[:300]
    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        _change_and_check(base, log, bearer, served, failures)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures[:5]
    before = [shown for started, shown in served if started < _marks["adding"]]
    after = [shown for started, shown in served if started > _marks["done"]]
    assert before and not any(before), "the field showed before it was added"
    assert len(after) > 10 and all(after), "a request started after the change did not show the field"


_marks: dict[str, float] = {}


def _change_and_check(base, log, bearer, served, failures) -> None:

    # A sales user opens the new-customer form before the change ...
    admin = Browser(base)
    admin.login("admin", PASSWORD)
    early_token, early_form = admin.csrf("/customer/add")
    assert FIELD not in early_form

    while len(served) < 5 and not failures:
        time.sleep(0.05)
    _marks["adding"] = time.monotonic()
    _add_field_through_screen(admin)
    changed_at = log.stat().st_size
    _marks["done"] = time.monotonic()

    # ... hit the server until both workers have served the field everywhere.
    seen_pids: dict[str, set[str]] = {}
    deadline = time.monotonic() + 60
    checks = {
        "form": lambda c, n: c.request(f"/customer/add?probe=form-{n}"),
        "list": lambda c, n: c.request(f"/customer/list/?probe=list-{n}"),
        "api": lambda c, n: c.request(f"/api/v1/customer/_info?probe=api-{n}", headers=bearer),
        "openapi": lambda c, n: c.request(f"/api/v1/_openapi?probe=openapi-{n}", headers=bearer),
    }
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        for name, check in checks.items():
            status, body, headers = check(admin, rounds)
            assert status == 200, (name, status, body[:300])
            # Every request after the change sees it, whichever worker answers.
            assert FIELD in body or "WeChat ID" in body or "微信号" in body, f"{name} does not show the field"
        seen_pids = _probe_pids(log, changed_at)
        if len(seen_pids) == len(checks) and all(len(p) >= 2 for p in seen_pids.values()):
            break
    assert len(seen_pids) == len(checks) and all(len(p) >= 2 for p in seen_pids.values()), \
        f"not every worker served every check: {seen_pids}"

    # The form opened before the change still saves (same CSRF token, the new field simply empty).
    name = f"早开表单{secrets.token_hex(3)}有限公司"
    fields = dict(re.findall(r'<input[^>]*name="([a-z_]+)"[^>]*value="([^"]*)"', early_form))
    fields.update({"csrf_token": early_token, "name": name, "customer_type": "prospect", "industry": "retail",
                   "contact_name": "王五", "contact_phone": "13700000000"})
    status, body, headers = admin.request("/customer/add", fields)
    assert status == 302, body[:500]
    status, body, _ = admin.request("/api/v1/customer/?q=" + urllib.parse.quote(
        json.dumps({"filters": [{"col": "name", "opr": "eq", "value": name}]})), headers=bearer)
    assert status == 200 and json.loads(body)["count"] == 1, body[:300]



def _probe_pids(log: Path, offset: int) -> dict[str, set[str]]:
    """check name → pids of the workers that answered its probes (from the access log)."""
    out: dict[str, set[str]] = {}
    with log.open() as fh:
        fh.seek(offset)
        for line in fh:
            m = re.search(r"^<?(\d+)>? \S+ \S+ probe=([a-z]+)-\d+", line)
            if m:
                out.setdefault(m.group(2), set()).add(m.group(1))
    return out
