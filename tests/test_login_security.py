"""Sign-in security: audited sign-ins, account lockout, failed-attempt rate limit per address, audited
permission denials, the password policy (FAB user screen and `crm create-user`), cookie flags and the
Content-Security-Policy (checked in Chromium: nothing on our pages or FAB's is blocked)."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from support import ADMIN_PASSWORD, csrf_token, login

LOCKED_ZH = "登录失败次数过多，请 10 分钟后再试"
LOCKED_EN = "Too many failed sign-ins, try again in 10 minutes"
PASSWORD = "Strong2026pass"


def _attempt(client, username, password, **kw):
    token = csrf_token(client, "/login/")
    return client.post("/login/", data={"username": username, "password": password, "csrf_token": token}, **kw)


def _signed_in(resp) -> bool:
    return resp.status_code == 302 and "/login" not in resp.headers["Location"]


def _audit(app, **where):
    with app.app_context():
        b = app.extensions["crm"]
        t = b.models.system["audit"]
        stmt = select(t).order_by(t.c.id)
        for key, value in where.items():
            stmt = stmt.where(t.c[key] == value)
        rows = [dict(r) for r in b.db.session.execute(stmt).mappings()]
        b.db.session.remove()
        return rows


def _api_login(client, username, password):
    return client.post("/api/v1/security/login", json={"username": username, "password": password, "provider": "db"})


def test_sign_ins_are_audited_and_five_failures_lock_the_account(app, monkeypatch):
    client = app.test_client()
    assert _signed_in(_attempt(client, "admin", ADMIN_PASSWORD))
    ok = _audit(app, action="login")
    assert [(r["username"], r["ip"]) for r in ok] == [("admin", "127.0.0.1")] and ok[0]["user_id"]

    attacker = app.test_client()
    for i in range(5):
        resp = _attempt(attacker, "admin", f"guess-{i}", follow_redirects=True)
        assert "登录失败次数过多" not in resp.get_data(as_text=True)
    failed = _audit(app, action="login_failed")
    assert len(failed) == 5
    assert {(r["username"], r["ip"], r["user_id"]) for r in failed} == {("admin", "127.0.0.1", ok[0]["user_id"])}

    # Locked: even the right password is refused, on the form and on the API, with a clear message.
    resp = _attempt(app.test_client(), "admin", ADMIN_PASSWORD, follow_redirects=True)
    assert LOCKED_ZH in resp.get_data(as_text=True) and "/login" in resp.request.path
    english = app.test_client()
    english.get("/lang/en")
    assert LOCKED_EN in _attempt(english, "ADMIN", ADMIN_PASSWORD, follow_redirects=True).get_data(as_text=True)
    api = _api_login(app.test_client(), "admin", ADMIN_PASSWORD)
    assert api.status_code == 429 and "access_token" not in api.json and "登录失败次数过多" in api.json["message"]
    assert len(_audit(app, action="login_locked")) == 3
    assert len(_audit(app, action="login")) == 1  # no sign-in while locked

    # A session opened before the lock keeps working; other accounts are not affected.
    with app.app_context():
        sm = app.appbuilder.sm
        sm.add_user("other1", "O", "T", "other1@crm.invalid", sm.find_role("admin"), PASSWORD)
    assert _signed_in(_attempt(app.test_client(), "other1", PASSWORD))

    # Ten minutes later the account opens again.
    from crm_meta.services import audit

    real = audit.utcnow
    monkeypatch.setattr(audit, "utcnow", lambda: real() + timedelta(minutes=11))
    assert _signed_in(_attempt(app.test_client(), "admin", ADMIN_PASSWORD))


def test_a_successful_sign_in_resets_the_count_and_unknown_names_lock_alike(app):
    client = app.test_client()
    for _ in range(4):
        assert not _signed_in(_attempt(client, "admin", "wrong-pass-1"))
    assert _signed_in(_attempt(app.test_client(), "admin", ADMIN_PASSWORD))
    for _ in range(4):
        assert not _signed_in(_attempt(client, "admin", "wrong-pass-1"))
    assert _signed_in(_attempt(app.test_client(), "admin", ADMIN_PASSWORD))  # 4 + 4, not 8 in a row

    # No account enumeration: a name that does not exist locks the same way.
    for _ in range(5):
        _attempt(client, "ghost", "wrong-pass-1")
    assert LOCKED_ZH in _attempt(client, "ghost", "x", follow_redirects=True).get_data(as_text=True)
    screen = login(app.test_client()).get("/crm/audit/?user=ghost").get_data(as_text=True)  # the admin looks
    assert screen.count('data-action="login_failed"') == 5 and screen.count('data-action="login_locked"') == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_failed_attempts_are_rate_limited_per_address(make_app):
    app = make_app(CRM_LOGIN_RATE_LIMIT="3 per minute")
    client = app.test_client()
    for name in ("a1", "a2", "a3"):  # different names: the account lockout is not what stops them
        assert not _signed_in(_attempt(client, name, "wrong-pass-1"))
    blocked = _attempt(client, "admin", ADMIN_PASSWORD)
    assert blocked.status_code == 429 and "登录尝试过于频繁" in blocked.get_data(as_text=True)
    assert _api_login(app.test_client(), "admin", ADMIN_PASSWORD).status_code == 429  # shared by both endpoints
    elsewhere = app.test_client()  # another address is not throttled
    assert _signed_in(_attempt(elsewhere, "admin", ADMIN_PASSWORD, environ_base={"REMOTE_ADDR": "10.9.8.7"}))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_successful_sign_ins_are_never_throttled(make_app):
    app = make_app(CRM_LOGIN_RATE_LIMIT="3 per minute")
    for _ in range(4):
        login(app.test_client())
        assert _api_login(app.test_client(), "admin", ADMIN_PASSWORD).status_code == 200


def test_permission_denials_are_audited(app, api):
    with app.app_context():
        sm = app.appbuilder.sm
        sm.add_user("nobody2", "N", "B", "nobody2@crm.invalid", sm.add_role("nobody"), PASSWORD)
    nobody = login(app.test_client(), "nobody2", PASSWORD)
    assert nobody.get("/crm/audit/?user=admin").status_code == 403
    token = _api_login(app.test_client(), "nobody2", PASSWORD).json["access_token"]
    assert app.test_client().get("/api/v1/customer/", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    denied = _audit(app, action="denied")
    assert [(r["username"], r["ip"], r["detail"]["method"], r["detail"]["path"]) for r in denied] == [
        ("nobody2", "127.0.0.1", "GET", "/crm/audit/"), ("nobody2", "127.0.0.1", "GET", "/api/v1/customer/")]
    assert denied[1]["entity"] == "customer" and denied[0]["request_id"]


def test_create_user_enforces_the_password_policy(app):
    runner = app.test_cli_runner()
    for weak, why in (("Short1", "10"), ("onlyletterslong", "digits"), ("1234567890123", "letters"),
                      ("newbie2026xyz", "username")):
        result = runner.invoke(args=["crm", "create-user", "newbie", "--role", "sales_rep", "--password", weak])
        assert result.exit_code == 1, result.output
        assert "password refused" in result.output and why in result.output
    with app.app_context():
        assert app.appbuilder.sm.find_user(username="newbie") is None
    result = runner.invoke(args=["crm", "create-user", "newbie", "--role", "sales_rep", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    assert _signed_in(_attempt(app.test_client(), "newbie", PASSWORD))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_user_screen_enforces_the_password_policy(app, client):
    with app.app_context():
        role_id = app.appbuilder.sm.find_role("sales_rep").id
    form = {"first_name": "新", "last_name": "用户", "username": "screenuser", "email": "screenuser@crm.invalid",
            "active": "y", "roles": str(role_id)}
    for weak in ("short1", "screenuser2026"):
        token = csrf_token(client, "/users/add")
        resp = client.post("/users/add", data={**form, "password": weak, "conf_password": weak, "csrf_token": token})
        assert resp.status_code == 200
        assert re.search("密码至少 10 个字符|密码不能包含用户名", resp.get_data(as_text=True))
    with app.app_context():
        assert app.appbuilder.sm.find_user(username="screenuser") is None
    token = csrf_token(client, "/users/add")
    resp = client.post("/users/add", data={**form, "password": PASSWORD, "conf_password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302
    with app.app_context():
        assert app.appbuilder.sm.find_user(username="screenuser") is not None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cookies_and_security_headers(app):
    client = app.test_client()
    resp = _attempt(client, "admin", ADMIN_PASSWORD)
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/customer/list/")
    csp = page.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "img-src 'self' data:", "object-src 'none'", "frame-ancestors 'none'",
                      "base-uri 'self'", "form-action 'self'"):
        assert directive in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert re.fullmatch(r"[0-9a-f]{32}", page.headers["X-Request-Id"])
    assert client.get("/api/v1/_openapi").headers["Content-Security-Policy"] == csp


@pytest.mark.browser
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_csp_blocks_nothing_on_our_pages_or_fabs(app, live_server, page):
    from playwright.sync_api import expect

    page.set_default_timeout(10_000)
    base = live_server(app)
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("pageerror", lambda exc: violations.append(f"page error: {exc}"))
    page.goto(f"{base}/login/")
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.locator("form[name=login] [type=submit]").click()
    page.wait_for_load_state()
    for path in ("/", "/customer/list/", "/customer/add", "/crm/audit/", "/crm/alerts/", "/users/list/",
                 "/swagger/v1"):
        page.goto(f"{base}{path}")
        page.wait_for_load_state("networkidle")
    expect(page.locator(".swagger-ui")).to_be_visible()  # Swagger UI rendered under the policy
    page.goto(f"{base}/crm/audit/")
    expect(page.locator(".crm-audit-row[data-action=login]")).to_have_count(1)
    assert violations == []
    # The check would see a violation: a script from elsewhere is refused and reported.
    page.evaluate("() => { const s = document.createElement('script'); s.src = 'https://example.invalid/x.js';"
                  " document.head.appendChild(s); }")
    page.wait_for_timeout(200)
    assert any("script-src" in v for v in violations)
