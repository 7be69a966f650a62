"""In a real headless Chromium: an admin extends the model on screen — a dictionary item on the data
dictionary screen, a custom field on the model screen (plan shown, then confirmed) — and a sales
user then sees the new field on the customer form, fills it, picks the new item, and saves.

SQLite only (the screens do not depend on the backend; tests/test_schema_admin.py covers both).
"""
from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import Page, expect

from support import ADMIN_PASSWORD
from test_browser import TIMEOUT_MS, select2_pick, _sign_in as _login

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


def _sales_rep(app) -> tuple[str, str]:
    from crm_meta.services.members import set_member

    password = "Rep-" + secrets.token_urlsafe(12)
    with app.app_context():
        b = app.extensions["crm"]
        sm = app.appbuilder.sm
        user = sm.add_user("rep_browser", "Rep", "Browser", "rep_browser@t.invalid", sm.find_role("sales_rep"),
                           password)
        set_member(b.db.session, b.registry, b.models.system["member"], user.id, "sales")
        b.db.session.commit()
    return "rep_browser", password


def test_admin_extends_the_model_on_screen_and_a_sales_user_fills_the_new_field(app, live_server, api,
                                                                                 page: Page, tmp_path):
    page.set_default_timeout(TIMEOUT_MS)
    base = live_server(app)
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    rep, rep_password = _sales_rep(app)

    # 1. The admin adds an industry on the data dictionary screen. -------------------------------
    _login(page, base, "admin", ADMIN_PASSWORD)
    page.goto(f"{base}/crm/dictionaries/industry/")
    page.fill("#d-code", "new_energy")
    page.fill("#d-zh", "新能源")
    page.fill("#d-en", "New energy")
    page.locator("form", has=page.locator("#d-code")).locator("[type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator("table")).to_contain_text("新能源")

    # 2. ... and a custom field on the model screen: the plan first, then confirm. -----------------
    page.goto(f"{base}/crm/schema/customer/")
    page.fill("#s-name", "wechat_id")
    page.select_option("#s-type", "string")
    page.fill("#s-zh", "微信号")
    page.fill("#s-en", "WeChat ID")
    page.fill("#s-length", "64")
    page.check("input[name=list]")
    page.check("input[name=search]")
    page.get_by_role("button", name=re.compile("查看执行计划|Show the plan")).click()
    page.wait_for_load_state()
    expect(page.locator("body")).to_contain_text("add column customer.wechat_id")
    page.screenshot(path=tmp_path / "plan.png", full_page=True)
    page.get_by_role("button", name=re.compile("确认并应用|Confirm and apply")).click()
    page.wait_for_load_state()
    expect(page.locator("body")).to_contain_text("wechat_id")
    page.goto(f"{base}/logout/")

    # 3. A sales rep sees the field on the customer form, fills it, picks the new industry. -------
    _login(page, base, rep, rep_password)
    page.goto(f"{base}/customer/add")
    expect(page.locator("label[for=wechat_id], th", has_text="微信号").first).to_be_visible()
    name = f"新能源测试{secrets.token_hex(3)}有限公司"
    page.fill("#name", name)
    page.fill("#wechat_id", "wx_rep_2026")
    select2_pick(page, "industry", "新能源")
    page.fill("#contact_name", "钱七")
    page.fill("#contact_phone", "13512345678")
    page.locator("#model_form [type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator(".alert-success")).to_contain_text("已保存")
    page.screenshot(path=tmp_path / "saved.png", full_page=True)

    # The record has both, and the list shows the new column.
    resp = api.get("/api/v1/customer/", query_string={"search": name})
    assert resp.status_code == 200 and resp.json["count"] == 1, resp.get_data(as_text=True)[:300]
    record = resp.json["result"][0]
    assert record["wechat_id"] == "wx_rep_2026" and record["industry"] == "new_energy"
    page.goto(f"{base}/customer/list/?q=wx_rep_2026")
    expect(page.locator("table.table-bordered tbody tr", has_text=name)).to_have_count(1)

    assert not js_errors, js_errors
    outside = [u for u in requested if not u.startswith(base) and not u.startswith("data:")]
    assert not outside, f"pages loaded something from outside the app: {outside[:5]}"
