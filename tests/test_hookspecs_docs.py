"""Every hook in crm_meta/hookspecs.py has a docstring, a section in docs/plugins.md with its exact
signature, and a test; and the Python examples of docs/plugins.md run, together, as one plugin."""
from __future__ import annotations

import inspect
import logging
import re
import types
from pathlib import Path

import pytest

from crm_meta import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"
HOOKS = sorted(n for n, f in vars(hookspecs).items() if n.startswith("crm_") and inspect.isfunction(f))


def signature(name: str) -> str:
    return f"{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_hook_list_is_complete():
    assert len(HOOKS) >= 11
    assert all(hasattr(getattr(hookspecs, n), f"{hookspecs.PROJECT}_spec") for n in HOOKS)  # all are specs


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 80, f"{hook} needs a docstring saying when it fires, its arguments and its return value"
    assert "When" in doc and "Returns" in doc, f"{hook}: say when it fires (When:) and what it returns (Returns:)"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_exact_signature(hook):
    assert signature(hook) in DOC.read_text(encoding="utf-8"), f"docs/plugins.md lacks `{signature(hook)}`"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    files = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    files += list((ROOT / "plugins").glob("*/tests/test_*.py"))
    using = [p.name for p in files if re.search(rf"\b{hook}\b", p.read_text(encoding="utf-8"))]
    assert using, f"no test under tests/ or plugins/*/tests/ mentions {hook}"


def _doc_plugins(tmp_path: Path) -> list[tuple[str, types.ModuleType]]:
    """Each ```python block with a hookimpl of docs/plugins.md as a module; its YAML blocks as files."""
    for text in blocks("yaml"):
        first = text.splitlines()[0]
        if first.startswith("# schemas/"):
            path = tmp_path / first[2:].strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    found = []
    for i, text in enumerate(blocks("python")):
        if "@hookimpl" not in text:
            continue
        module = types.ModuleType(f"docs_example_{i}")
        module.__file__ = str(tmp_path / f"docs_example_{i}.py")
        exec(compile(text, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own docs
        found.append((module.__name__, module))
    return found


def test_the_examples_implement_every_hook_and_run(tmp_path, caplog):
    from crm_meta.testing import api_client, login, make_app

    plugins = _doc_plugins(tmp_path / "example")
    app = make_app(tmp_path / "app", plugins=plugins)
    implemented = {h for i in app.extensions["crm"].plugins.enabled for h in i.hooks}
    assert implemented >= set(HOOKS), f"docs/plugins.md has no example of {sorted(set(HOOKS) - implemented)}"

    api = api_client(app)
    body = {"name": "甲公司", "grade": "C", "industry": "finance", "contact_name": "王五",
            "contact_phone": "13700000000", "vip": True}
    refused = api.post("/api/v1/customer/", json=body)  # crm_schema_paths added `vip`; crm_before_create
    assert refused.status_code == 422 and refused.json["message"] == "C级客户不能设为重要客户"
    with caplog.at_level(logging.INFO, logger="crm_vip"):
        created = api.post("/api/v1/customer/", json={**body, "grade": "A"})
        assert created.status_code == 201, created.json
        rid = created.json["id"]
        churn = api.put(f"/api/v1/customer/{rid}", json={"grade": "C", "version": 1})
        assert churn.status_code == 422  # crm_before_update
        assert api.delete(f"/api/v1/customer/{rid}").status_code == 422  # crm_before_delete
        move = f"/api/v1/customer/{rid}/transition"
        refused = api.post(move, json={"to": "churned", "comment": "不再合作"})  # crm_before_transition
        assert refused.status_code == 422 and "流失" in refused.json["message"]
        assert api.post(move, json={"to": "intent"}).status_code == 200  # crm_after_transition
        assert api.put(f"/api/v1/customer/{rid}", json={"vip": False, "version": 2}).status_code == 200
        assert api.delete(f"/api/v1/customer/{rid}").status_code == 200
    assert "VIP customer 甲公司 (#1) added by user 1" in caplog.text  # crm_after_create
    assert "customer #1 VIP True -> False (version 3)" in caplog.text  # crm_after_update
    assert "customer #1 customer_type: prospect -> intent" in caplog.text  # crm_after_transition
    assert "customer 甲公司 (#1) deleted by user 1" in caplog.text  # crm_after_delete

    created = api.post("/api/v1/customer/", json={**body, "name": "乙公司", "grade": "A"})
    assert created.status_code == 201
    client = login(app.test_client(), app)
    assert "<li>乙公司</li>" in client.get("/vip/").get_data(as_text=True)  # crm_register_views
    assert "vip-count'>1</p>" in client.get("/").get_data(as_text=True)  # crm_dashboard_widgets
    runner = app.test_cli_runner()
    assert runner.invoke(args=["crm", "vip-count"]).output == "1 VIP customer(s)\n"  # crm_cli_commands
    ran = runner.invoke(args=["crm", "jobs", "run", "vip_report"]).output  # crm_scheduled_jobs
    assert "ok — 1 VIP customer(s)" in ran

    plain = {**body, "grade": "A", "vip": False}  # crm_field_types: customer.wechat is a wechat_id
    refused = api.post("/api/v1/customer/", json={**plain, "name": "丙公司", "wechat": "1abc"})
    assert refused.status_code == 422
    assert refused.json["message"] == {"wechat": ["微信号为 6–20 位字母、数字、- 或 _，以字母开头"]}
    stored = api.post("/api/v1/customer/", json={**plain, "name": "丙公司", "wechat": "WX Zhang-San"})
    assert stored.status_code == 201 and stored.json["result"]["wechat"] == "wxzhang-san"
