"""End to end in a real headless Chromium: log in, create and search customers through the
generated screens, validation errors, switching the UI to English, and the AJAX reference lookup.

Runs on SQLite only (the screens do not depend on the backend; the service tests cover both).
Needs Chromium (``make install``); skip with ``-m "not browser"``.
"""
from __future__ import annotations

import re
import secrets
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from support import ADMIN_PASSWORD

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]

TIMEOUT_MS = 10_000
CJK = re.compile(r"[\u4e00-\u9fff]")
LIST = "table.table-bordered"  # the record list (the filter form is another table)


def select2_pick(page: Page, field_id: str, label: str, *, search: str | None = None,
                 screenshot=None) -> None:
    """Open the Select2 box that replaces ``<select id=field_id>``, optionally type ``search`` into
    its search field, and click the option whose visible text is exactly ``label``."""
    page.locator(f"#{field_id} + .select2-container .select2-selection").click()
    dropdown = page.locator(".select2-container--open .select2-dropdown")
    expect(dropdown).to_be_visible()
    options = dropdown.locator(".select2-results__option")
    if search is not None:
        dropdown.locator(".select2-search__field").fill(search)
        # Wait for the filtered results: stale ones and "Searching…" must be gone (AJAX boxes
        # first show what they loaded for the empty term).
        expect(options.filter(has_not_text=search)).to_have_count(0)
    option = options.filter(
        has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    expect(option).to_have_count(1)
    if screenshot:
        page.screenshot(path=screenshot)
    option.click()
    expect(dropdown).to_have_count(0)  # closed after picking
    expect(page.locator(f"#select2-{field_id}-container")).to_contain_text(label)


def customer_count(api, name: str | None = None) -> int:
    resp = api.get("/api/v1/customer/", query_string={"search": name} if name else None)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json["count"]


def test_customer_and_contact_screens(app, live_server, api, page: Page, tmp_path):
    page.set_default_timeout(TIMEOUT_MS)
    base = live_server(app)
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    console_errors: list[str] = []  # e.g. "Failed to load resource: 404" (every page asked for /favicon.ico)
    page.on("console", lambda msg: console_errors.append(f"{msg.text} @ {msg.location.get('url')}")
            if msg.type == "error" else None)

    tag = secrets.token_hex(3)
    name = f"浙江测试{tag}机械有限公司"
    other = f"上海无关{tag}贸易有限公司"
    # An unrelated customer created beforehand through the REST API.
    resp = api.post("/api/v1/customer/", json={
        "name": other, "customer_type": "prospect", "industry": "retail",
        "contact_name": "李四", "contact_phone": "13900000000"})
    assert resp.status_code == 201, resp.get_data(as_text=True)

    # 1. Log in through the login form. -------------------------------------------------------
    page.goto(f"{base}/login/")
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.locator("form[name=login] [type=submit]").click()
    page.wait_for_load_state()
    assert "/login" not in page.url
    expect(page.locator("a.dropdown-toggle .fa-user")).to_be_visible()  # the user menu

    # 2. Create a customer through the generated form. ------------------------------------------
    day_before = date.today()
    page.goto(f"{base}/customer/list/")
    page.locator('a[href^="/customer/add"]').first.click()  # the list's "+" button
    page.wait_for_url(re.compile(r"/customer/add"))
    page.fill("#name", name)
    expect(page.locator("#customer_type")).to_have_count(0)  # a pipeline field: starts as 潜在客户
    select2_pick(page, "industry", "制造业")
    page.fill("#contact_name", "张三")
    page.fill("#contact_phone", "13812345678")
    select2_pick(page, "owner", "系统管理员 (admin)")
    page.locator("#model_form [type=submit]").click()
    page.wait_for_load_state()
    day_after = date.today()
    expect(page.locator(".alert-success")).to_contain_text("已保存")
    assert customer_count(api, name) == 1
    # (Saving lands on the index page, not back on the list — reported bug; so go there.)
    page.goto(f"{base}/customer/list/")
    expect(page.locator(f"{LIST} tbody tr", has_text=name)).to_have_count(1)

    # 3. Quick search. ---------------------------------------------------------------------------
    page.fill("#crm-q", f"测试{tag}")
    page.locator("#crm-q-submit").click()
    page.wait_for_load_state()
    assert "q=" in page.url
    rows = page.locator(f"{LIST} tbody tr")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("潜在客户")
    expect(row).to_contain_text("制造业")
    expect(row).to_contain_text("138****5678")  # masked, even for the admin
    days = "|".join({d.strftime("%Y%m%d") for d in (day_before, day_after)})
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert any(re.fullmatch(rf"C(?:{days})\d{{3}}", c) for c in cells), cells
    expect(page.locator(LIST)).not_to_contain_text(other)
    page.screenshot(path=tmp_path / "search.png", full_page=True)

    # 4. Validation: a required field left empty and a bad phone. -------------------------------
    before = customer_count(api)
    page.goto(f"{base}/customer/add")
    select2_pick(page, "industry", "制造业")
    page.fill("#contact_name", "王五")
    page.fill("#contact_phone", "abc")
    page.locator("#model_form [type=submit]").click()
    # The browser itself refuses first (HTML5 `required` on the name) ...
    assert page.url.endswith("/customer/add")
    assert page.eval_on_selector("#name", "el => !el.validity.valid")
    # ... and with client-side validation off, the server rejects it and marks both fields.
    page.eval_on_selector("#model_form", "f => { f.noValidate = true; }")
    page.locator("#model_form [type=submit]").click()
    page.wait_for_load_state()
    name_cell = page.locator("td", has=page.locator("#name"))
    phone_cell = page.locator("td", has=page.locator("#contact_phone"))
    expect(name_cell).to_contain_text(re.compile("必填|required", re.I))
    expect(phone_cell).to_contain_text("不是有效的电话号码")
    expect(page.locator("#contact_phone")).to_have_value("abc")  # what the user typed is kept
    expect(page.locator(".alert-success")).to_have_count(0)
    assert customer_count(api) == before
    assert customer_count(api, "王五") == 0
    page.screenshot(path=tmp_path / "errors.png", full_page=True)

    # 5. Switch the UI to English through the language menu. ------------------------------------
    page.goto(f"{base}/customer/list/")
    page.locator("a.dropdown-toggle:has(i.flag)").click()
    page.locator('a[href$="/lang/en"]').click()
    page.wait_for_load_state()
    page.goto(f"{base}/customer/list/")
    nav = page.locator(".navbar")
    expect(nav).to_contain_text("Customers")
    expect(nav).to_contain_text("系统管理员")  # the admin's name, family name first (FAB wrote "管理员 系统")
    header = page.locator(f"{LIST} thead")
    expect(header).to_contain_text("Name")
    expect(header).to_contain_text("Customer No.")
    assert not CJK.search(header.inner_text()), header.inner_text()
    expect(page.locator(".panel-heading").first).to_contain_text("Customer")
    expect(page.locator(f"{LIST} tbody tr", has_text=name)).to_contain_text("Prospect")  # dictionary labels too
    page.screenshot(path=tmp_path / "english.png", full_page=True)

    # 6. A contact whose customer is picked through the AJAX lookup box. --------------------------
    page.goto(f"{base}/contact/add")
    select2_pick(page, "customer", name, search=f"测试{tag}", screenshot=tmp_path / "lookup.png")
    lookups = [parse_qs(urlsplit(u).query) for u in requested if urlsplit(u).path == "/crm/lookup/customer"]
    assert {"q": [f"测试{tag}"], "page": ["1"]} in lookups, lookups  # the box asked the server
    assert page.eval_on_selector("#customer", "el => el.value").isdigit()
    page.fill("#name", "赵六")
    # The owner has to be picked by hand: the add form neither pre-selects the `current_user`
    # default nor lets the service apply it when the box is left empty (reported bug).
    select2_pick(page, "owner", "系统管理员 (admin)")
    page.locator("#model_form [type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator(".alert-success")).to_contain_text("Saved")
    page.goto(f"{base}/contact/list/")
    expect(page.locator(f"{LIST} tbody tr", has_text="赵六")).to_contain_text(name)

    # 7. Its edit form: the customer box is the same lookup (FAB's edit page dropped crm.js, leaving a
    # plain <select> holding only the current customer), so the contact can move to another one. ----
    contact = api.get("/api/v1/contact/", query_string={"search": "赵六"}).json["result"][0]
    page.goto(f"{base}/contact/edit/{contact['id']}")
    select2_pick(page, "customer", other, search=f"无关{tag}")
    page.locator("#model_form [type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator(".alert-success")).to_contain_text("Saved")
    other_id = api.get("/api/v1/customer/", query_string={"search": other}).json["result"][0]["id"]
    assert api.get(f"/api/v1/contact/{contact['id']}").json["result"]["customer"] == other_id

    # 8. A follow-up's date and time, set in the browser's picker, saved to the second; opening and
    # saving its edit form (focus in and out of the field) keeps it. ------------------------------
    page.goto(f"{base}/follow_up/add")
    select2_pick(page, "customer", name, search=f"测试{tag}")
    assert page.eval_on_selector("#followed_at", "el => el.type") == "datetime-local"
    page.fill("#followed_at", "2026-11-20T14:35:08")
    select2_pick(page, "method", "Phone")  # the UI is in English since step 5
    page.fill("#content", "电话沟通需求")
    select2_pick(page, "owner", "系统管理员 (admin)")
    page.locator("#model_form [type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator(".alert-success")).to_contain_text("Saved")
    follow_up = api.get("/api/v1/follow_up/", query_string={"search": "电话沟通需求"}).json["result"]
    assert [f["followed_at"] for f in follow_up] == ["2026-11-20T14:35:08"], follow_up
    page.goto(f"{base}/follow_up/edit/{follow_up[0]['id']}")
    expect(page.locator("#followed_at")).to_have_value("2026-11-20T14:35:08")
    page.locator("#followed_at").focus()
    page.locator("#content").focus()
    page.locator("#model_form [type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator(".alert-success")).to_contain_text("Saved")
    assert api.get(f"/api/v1/follow_up/{follow_up[0]['id']}").json["result"]["followed_at"] == "2026-11-20T14:35:08"

    assert not js_errors, js_errors
    assert not console_errors, console_errors
    # Nothing was loaded from outside the live server.
    assert requested
    outside = [u for u in requested if not (u.startswith(base + "/") or u.startswith("data:"))]
    assert not outside, outside


def _sign_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("#username", username)
    page.fill("#password", password)
    page.locator("form[name=login] [type=submit]").click()
    page.wait_for_load_state()
    assert "/login" not in page.url, f"{username} could not sign in"


def test_sales_rep_sees_own_customers_masked_and_a_managers_reveal_is_audited(make_app, live_server, page: Page):
    """A sales rep sees only their customers, phones masked; a manager reveals one phone in the
    browser, and the admin finds that reveal on the audit screen."""
    from test_access_matrix import World

    page.set_default_timeout(TIMEOUT_MS)
    world = World(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))
    base = live_server(world.app)
    mine = world.records[("sales_rep_me", "customer")]
    other = world.records[("other_dept", "customer")]

    _sign_in(page, base, "sales_rep_me", world.passwords["sales_rep_me"])
    page.goto(f"{base}/customer/list/")
    rows = page.locator(f"{LIST} tbody tr")
    expect(page.locator(f"a[href$='/customer/show/{mine}']").first).to_be_visible()
    expect(page.locator(f"a[href$='/customer/show/{other}']")).to_have_count(0)
    expect(rows.filter(has_text="138****5678").first).to_be_visible()
    assert "13812345678" not in page.content()
    page.goto(f"{base}/customer/show/{other}")
    assert "13812345678" not in page.content()
    page.goto(f"{base}/logout/")

    _sign_in(page, base, "sales_manager_me", world.passwords["sales_manager_me"])
    page.goto(f"{base}/customer/show/{mine}")
    expect(page.locator(".crm-revealed#crm-revealed-contact_phone")).to_have_text("")
    page.locator(".crm-reveal-btn[data-field=contact_phone]").click()
    expect(page.locator("#crm-revealed-contact_phone")).to_have_text("13812345678")
    page.goto(f"{base}/logout/")

    _sign_in(page, base, "admin", ADMIN_PASSWORD)
    page.goto(f"{base}/crm/audit/?action=reveal")
    table = page.locator("table").filter(has_text="sales_manager_me")
    expect(table.first).to_be_visible()
    expect(table.first).to_contain_text("联系电话")


def test_kanban_drag_into_contract_signed_needs_the_contract(make_app, live_server, page: Page):
    """Drag an opportunity into 合同签订 without a contract: refused, naming what is missing; fill
    the contract in and the move is recorded in the status history."""
    from test_access_matrix import World

    from crm_meta.services.records import Actor, RecordService

    page.set_default_timeout(TIMEOUT_MS)
    world = World(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))
    rid = world.records[("sales_rep_me", "opportunity")]
    with world.app.app_context():  # bring the deal to negotiation (as the system: demo history)
        b = world.app.extensions["crm"]
        RecordService(b.db.session, b.models, "opportunity", Actor(None)).update(
            rid, {"stage": "negotiation", "contract_no": None, "contract_amount": None, "effective_date": None})
        b.db.session.commit()
    base = live_server(world.app)
    _sign_in(page, base, "sales_rep_me", world.passwords["sales_rep_me"])
    page.set_viewport_size({"width": 1366, "height": 800})
    page.goto(f"{base}/crm/board/opportunity/?field=stage")
    # all seven columns fit a 1366 px screen (成交回款 and 输单 were cut off behind a scroll bar)
    assert page.eval_on_selector(".crm-board", "b => b.scrollWidth <= b.clientWidth + 1")
    card = page.locator(f".crm-card[data-id='{rid}']")
    expect(page.locator(".crm-board-column[data-state=negotiation]").locator(card)).to_have_count(1)
    # skipping the contract is no move at all: said in words, and nothing to fill in
    card.drag_to(page.locator(".crm-board-column[data-state=won_paid] .crm-board-cards"))
    error = page.locator(".crm-board-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("商务谈判")
    expect(error).not_to_contain_text("stage")
    expect(page.locator(".crm-board-fill")).to_be_hidden()
    card.drag_to(page.locator(".crm-board-column[data-state=contract_signed] .crm-board-cards"))
    expect(error).to_contain_text("合同编号")
    expect(error).to_contain_text("合同金额")
    assert not re.search(r"contract_no|contract_amount|effective_date", error.inner_text()), error.inner_text()
    expect(page.locator(".crm-board-fill")).to_be_visible()
    expect(page.locator(".crm-board-column[data-state=negotiation]").locator(card)).to_have_count(1)

    page.locator(".crm-board-fill").click()
    page.fill("#contract_no", "HT-2026-001")
    page.fill("#contract_amount", "480000")
    page.fill("#comment", "客户已盖章")
    page.locator("#effective_date").click()  # the picker speaks Chinese, weeks start on Monday
    expect(page.locator(".datepicker-dropdown")).to_be_visible()
    expect(page.locator(".datepicker-dropdown .datepicker-switch").first).to_contain_text("年")
    expect(page.locator(".datepicker-dropdown th.dow").first).to_have_text("一")
    page.keyboard.press("Escape")
    page.fill("#effective_date", "2026-12-01")  # typed (no keyup): the date picker keeps it (crm.js)
    page.locator("#crm-move-submit").click()
    page.wait_for_load_state()
    import re as _re
    assert f"/opportunity/show/{rid}" in page.url, _re.findall(r'<label for="(\w+)"[^<]*</label>(?:(?!form-group).)*?help-block">([^<]*)', page.content(), _re.S) + \
        _re.findall(r'alert[^>]*>([^<]{0,200})', page.content())
    history = page.locator("table.crm-status-history")
    expect(history).to_contain_text("商务谈判")
    expect(history).to_contain_text("合同签订")
    expect(history).to_contain_text("客户已盖章")
    page.goto(f"{base}/crm/board/opportunity/?field=stage")
    expect(page.locator(".crm-board-column[data-state=contract_signed]").locator(
        f".crm-card[data-id='{rid}']")).to_have_count(1)


def test_the_english_menu_stays_on_one_row(app, live_server, page: Page):
    """FAB's navbar sat in a fixed 1,170 px box: in English, with a user's full name, the language and
    user menus wrapped under the brand on screens of 1280 to 1920 px."""
    with app.app_context():
        sm = app.appbuilder.sm
        sm.add_user("amontgomery", "Alexandra", "Montgomery-Smith", "am@example.com", sm.find_role("admin"),
                    "Pw-2026-long-name")
    base = live_server(app)
    _sign_in(page, base, "amontgomery", "Pw-2026-long-name")
    page.goto(f"{base}/lang/en")
    page.goto(f"{base}/customer/list/")
    expect(page.locator(".navbar")).to_contain_text("Alexandra Montgomery-Smith")
    for width in (1280, 1366, 1920):
        page.set_viewport_size({"width": width, "height": 900})
        assert page.eval_on_selector(".navbar", "n => n.getBoundingClientRect().height") < 70, width
