"""Import from CSV and Excel: labels as exported, all rows or none, every problem named by row,
column and reason, the access policy applied to each row, audited. SQLite and PostgreSQL."""
from __future__ import annotations

import io

import pytest
from support import csrf_token
from test_access_matrix import World

HEADER = ["客户名称", "客户类型", "所属行业", "联系人", "联系电话", "负责人", "标签"]


@pytest.fixture
def world(make_app) -> World:
    return World(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))


def _csv(rows) -> bytes:
    import csv

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _count(world, entity="customer") -> int:
    return world.api("admin_me").get(f"/api/v1/{entity}/").json["count"]


def _upload(api, data: bytes, name: str = "customers.csv"):
    return api.post("/api/v1/customer/import", data={"file": (io.BytesIO(data), name)},
                    content_type="multipart/form-data")


def test_import_creates_every_row_from_labels(world):
    before = _count(world)
    rows = [HEADER,
            ["导入甲公司", "潜在客户", "制造业", "张三", "13800000001", "same_dept", "重点客户"],
            ["导入乙公司", "prospect", "Retail", "李四", "13800000002", "child_dept", ""]]
    resp = _upload(world.api("sales_manager_me"), _csv(rows))
    assert resp.status_code == 200, resp.json
    assert resp.json["created"] == 2 and _count(world) == before + 2
    found = world.api("admin_me").get("/api/v1/customer/?search=导入甲公司").json["result"][0]
    assert found["customer_type"] == "prospect" and found["industry"] == "manufacturing"
    assert found["owner"] == world.user_ids["same_dept"]
    assert found["customer_no"].startswith("C")  # numbered like any new customer


def test_bad_rows_are_named_and_nothing_is_saved(world):
    before = _count(world)
    rows = [HEADER + ["不存在的列"],
            ["好公司", "潜在客户", "制造业", "张三", "13800000001", "same_dept", "", ""]]
    resp = _upload(world.api("sales_manager_me"), _csv(rows))
    assert resp.status_code == 422
    assert {"row": 1, "column": "不存在的列"}.items() <= resp.json["errors"][0].items()
    rows = [HEADER,
            ["好公司", "潜在客户", "制造业", "张三", "13800000001", "same_dept", ""],
            ["坏电话", "潜在客户", "制造业", "王五", "abc", "same_dept", ""],
            ["坏行业", "潜在客户", "造船业", "赵六", "13800000003", "same_dept", ""],
            ["别部门", "潜在客户", "制造业", "钱七", "13800000004", "other_dept", ""]]
    resp = _upload(world.api("sales_manager_me"), _csv(rows))
    assert resp.status_code == 422
    problems = {(p["row"], p["column"]) for p in resp.json["errors"]}
    assert problems == {(3, "联系电话"), (4, "所属行业"), (5, "负责人")}
    assert all(p["reason"] for p in resp.json["errors"])
    assert _count(world) == before  # the good row was not saved either


def test_import_needs_the_import_right_and_is_audited(world):
    rows = [HEADER, ["某公司", "潜在客户", "制造业", "张三", "13800000001", "other_dept", ""]]
    assert _upload(world.api("sales_rep_me"), _csv(rows)).status_code == 403
    assert _upload(world.api("sales_manager_me"), _csv(rows)).status_code == 422  # not in the manager's tree
    rows[1][5] = "sales_manager_me"
    assert _upload(world.api("sales_manager_me"), _csv(rows)).status_code == 200
    with world.app.app_context():
        from sqlalchemy import select
        b = world.app.extensions["crm"]
        audit = b.models.system["audit"]
        row = b.db.session.execute(select(audit.c.username, audit.c.quantity)
                                   .where(audit.c.action == "import")).one()
    assert tuple(row) == ("sales_manager_me", 1)


def test_excel_export_imports_back_on_screen(world):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(HEADER)
    ws.append(["表格公司", "潜在客户", "服务业", "孙八", 13800000009, "sales_manager_me", "重点客户"])
    buf = io.BytesIO()
    wb.save(buf)
    ui = world.browser("sales_manager_me")
    assert "crm-import" in ui.get("/customer/list/").get_data(as_text=True)
    token = csrf_token(ui, "/customer/import/")
    resp = ui.post("/customer/import/", data={"file": (io.BytesIO(buf.getvalue()), "c.xlsx"), "csrf_token": token},
                   content_type="multipart/form-data")
    assert resp.status_code == 302
    found = world.api("admin_me").get("/api/v1/customer/?search=表格公司").json["result"]
    assert len(found) == 1 and found[0]["industry"] == "services"
    bad = ui.post("/customer/import/", data={"file": (io.BytesIO(b"not,a\nreal,file"), "x.csv"),
                                             "csrf_token": token}, content_type="multipart/form-data")
    html = bad.get_data(as_text=True)
    assert bad.status_code == 200 and "未导入任何记录" in html and "未知的列" in html
