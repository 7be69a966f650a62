"""The Chinese interface is Chinese also where Flask-AppBuilder's own catalogue stops (user groups,
list filters), list filters compare dictionary fields whole, and a typed "In" list is a list."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from support import login

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
CATALOGUE = Path(__file__).resolve().parents[1] / "crm_meta" / "web" / "translations" / "zh" / "LC_MESSAGES"


def test_the_compiled_catalogue_is_the_po_file():
    po = {m.id: m.string for m in read_po(open(CATALOGUE / "messages.po", "rb")) if m.id}
    mo = {m.id: m.string for m in read_mo(open(CATALOGUE / "messages.mo", "rb")) if m.id}
    assert po == mo, "run: .venv/bin/pybabel compile -d crm_meta/web/translations"


@SQLITE
def test_user_groups_and_filter_operators_read_in_chinese(client, api):
    groups = client.get("/groups/list/").get_data(as_text=True)
    assert "用户组列表" in groups and "List Groups" not in groups
    customers = client.get("/customer/list/").get_data(as_text=True)
    menu = customers.split('class="navbar', 1)[1].split("</nav>", 1)[0]
    assert "用户组列表" in menu and "List Groups" not in menu
    # the filter operators of the screens and of REST: 属于 / 不属于, not In / Not In
    names = {f["operator"]: f["name"] for f in api.get("/api/v1/customer/_info").json["filters"]["name"]}
    assert (names["in"], names["not_in"]) == ("属于", "不属于"), names


@SQLITE
def test_a_dictionary_field_filters_by_whole_code_and_in_takes_a_typed_list(app, client, api):
    for name, kind in (("甲公司", "retail"), ("乙公司", "finance"), ("丙公司", "manufacturing")):
        body = {"name": name, "customer_type": "prospect", "industry": kind, "contact_name": "王五",
                "contact_phone": "13800000000"}
        assert api.post("/api/v1/customer/", json=body).status_code == 201
    info = api.get("/api/v1/customer/_info").json
    operators = [f["operator"] for f in info["filters"]["industry"]]
    assert operators[0] == "eq" and "sw" not in operators and "ct" not in operators, operators
    # the screen's text box: "甲公司, 丙公司" is two names (FAB matched names made of any of its characters)
    view = "CustomerView"
    column = "name"
    index = [f["operator"] for f in info["filters"][column]].index("in")
    page = client.get(f"/customer/list/?_flt_{index}_{column}=甲公司, 丙公司").get_data(as_text=True)
    assert "table-bordered" in page, page[-3000:]
    listed = set(re.findall(r"[甲乙丙]公司", page.split("table-bordered", 1)[1]))
    assert listed == {"甲公司", "丙公司"}, (listed, view)
    whole = api.get("/api/v1/customer/?q=(filters:!((col:industry,opr:in,value:!(retail,finance))))").json
    assert sorted(r["name"] for r in whole["result"]) == ["乙公司", "甲公司"]
    assert api.get("/api/v1/customer/?q=(filters:!((col:industry,opr:sw,value:ret)))").status_code == 400
