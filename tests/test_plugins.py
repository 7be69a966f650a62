"""The plugin system: discovery and enabling, broken plugins, and the contract of every hook.

Record hooks are tested through the REST API, the screens and ``RecordService`` directly, on SQLite
and PostgreSQL (``make_app`` from conftest); start-up checks that need no database variety use
``crm_meta.testing.make_app`` (SQLite) or ``load_plugins`` alone.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from support import csrf_token, login
from sqlalchemy import func, select, text

from crm_meta import hookimpl
from crm_meta.errors import HookFailed, HookRefused, PluginError
from crm_meta.plugins import BUILTINS, Widget, load_plugins
from crm_meta.services.records import Actor, RecordService
from crm_meta.testing import api_client

ROOT = Path(__file__).resolve().parent.parent
CUSTOMER = {"name": "插件测试客户", "customer_type": "prospect", "industry": "finance", "contact_name": "赵六",
            "contact_phone": "13700000000"}
_names = itertools.count(1)


def with_plugins(make_app, *plugins, schema_path=None, **config):
    """An app (conftest's make_app: the test's database) with exactly these plugin objects enabled."""
    given = [(p.name, p) for p in plugins]
    return make_app(schema_path, CRM_PLUGINS=[n for n, _ in given], CRM_EXTRA_PLUGINS=given, **config)


def count(app, entity: str) -> int:
    with app.app_context():
        b = app.extensions["crm"]
        return b.db.session.execute(select(func.count()).select_from(b.models.model(entity))).scalar_one()


def service(app, entity: str = "customer") -> RecordService:
    b = app.extensions["crm"]
    admin = app.appbuilder.sm.find_user(username="admin")
    return RecordService(b.db.session, b.models, entity, Actor(admin.id, "en"))


class Recorder:
    """Records every record-hook call; ``fail`` maps a hook name to the exception it raises."""

    def __init__(self, name: str = "recorder"):
        self.name, self.calls, self.fail = name, [], {}

    def _hit(self, hook: str, **seen):
        self.calls.append((hook, seen))
        if hook in self.fail:
            raise self.fail[hook]

    @hookimpl
    def crm_before_create(self, entity, data, actor, session):
        self._hit("crm_before_create", entity=entity, data=dict(data), actor=actor, session=session)

    @hookimpl
    def crm_after_create(self, entity, record, actor, session):
        self._hit("crm_after_create", entity=entity, id=record.id, version=record.version, session=session)

    @hookimpl
    def crm_before_update(self, entity, record, changes, actor, session):
        self._hit("crm_before_update", entity=entity, changes=dict(changes), stored=record.name,
                  version=record.version)

    @hookimpl
    def crm_after_update(self, entity, record, changes, actor, session):
        self._hit("crm_after_update", entity=entity, changes=dict(changes), stored=record.name,
                  version=record.version)

    @hookimpl
    def crm_before_delete(self, entity, record, actor, session):
        self._hit("crm_before_delete", entity=entity, id=record.id)

    @hookimpl
    def crm_after_delete(self, entity, record, actor, session):
        self._hit("crm_after_delete", entity=entity, id=record.id)


# -- record hooks ---------------------------------------------------------------------------------

def test_record_hooks_fire_in_order_with_their_arguments(make_app):
    rec = Recorder()
    app = with_plugins(make_app, rec)
    api = api_client(app)
    created = api.post("/api/v1/customer/", json=CUSTOMER)
    assert created.status_code == 201, created.json
    rid = created.json["id"]
    assert api.put(f"/api/v1/customer/{rid}", json={"name": "改名", "remark": None, "version": 1}).status_code == 200
    assert api.delete(f"/api/v1/customer/{rid}").status_code == 200

    assert [c[0] for c in rec.calls] == ["crm_before_create", "crm_after_create", "crm_before_update",
                                         "crm_after_update", "crm_before_delete", "crm_after_delete"]
    calls = dict(rec.calls)
    with app.app_context():
        admin_id = app.appbuilder.sm.find_user(username="admin").id
    before = calls["crm_before_create"]
    assert before["entity"] == "customer" and before["actor"].user_id == admin_id
    assert before["data"]["name"] == "插件测试客户" and before["data"]["owner"] == admin_id  # defaults applied
    assert calls["crm_after_create"] == {"entity": "customer", "id": rid, "version": 1,
                                         "session": calls["crm_after_create"]["session"]}
    assert calls["crm_after_create"]["session"] is before["session"]
    # only the fields that change, as (old, new); before: still stored, after: the new values
    assert calls["crm_before_update"] == {"entity": "customer", "changes": {"name": ("插件测试客户", "改名")},
                                          "stored": "插件测试客户", "version": 1}
    assert calls["crm_after_update"] == {"entity": "customer", "changes": {"name": ("插件测试客户", "改名")},
                                         "stored": "改名", "version": 2}
    assert calls["crm_before_delete"] == calls["crm_after_delete"] == {"entity": "customer", "id": rid}


def test_before_update_refusal_leaves_the_record_unchanged(make_app):
    rec = Recorder()
    app = with_plugins(make_app, rec)
    api = api_client(app)
    rid = api.post("/api/v1/customer/", json=CUSTOMER).json["id"]
    rec.fail["crm_before_update"] = HookRefused("不许改名")

    resp = api.put(f"/api/v1/customer/{rid}", json={"name": "REST 改名", "version": 1})  # REST
    assert resp.status_code == 422 and resp.json == {"message": "不许改名"}
    got = api.get(f"/api/v1/customer/{rid}").json["result"]
    assert got["name"] == "插件测试客户" and got["version"] == 1

    with app.app_context():  # the service itself
        svc = service(app)
        with pytest.raises(HookRefused) as refused:
            svc.update(rid, {"name": "服务改名"}, expected_version=1)
        assert refused.value.plugin == "recorder" and refused.value.status == 422
        svc.session.commit()  # even a commit afterwards writes nothing
        svc.session.expire_all()
        assert (svc.get(rid).name, svc.get(rid).version) == ("插件测试客户", 1)

    client = login(app.test_client())  # the screen: a flash, the form again, nothing saved
    token = csrf_token(client, f"/customer/edit/{rid}")
    with app.app_context():
        owner = str(app.appbuilder.sm.find_user(username="admin").id)
    page = client.post(f"/customer/edit/{rid}", data={**CUSTOMER, "name": "界面改名", "version": "1",
                                                       "owner": owner, "csrf_token": token})
    assert page.status_code == 200 and "不许改名" in page.get_data(as_text=True)
    got = api.get(f"/api/v1/customer/{rid}").json["result"]
    assert got["name"] == "插件测试客户" and got["version"] == 1


def test_an_exception_in_after_create_rolls_the_insert_back(make_app):
    rec = Recorder()
    app = with_plugins(make_app, rec)
    api = api_client(app)
    rec.fail["crm_after_create"] = RuntimeError("boom")

    resp = api.post("/api/v1/customer/", json=CUSTOMER)
    assert resp.status_code == 422
    assert resp.json["message"] == "插件 recorder 出错，未保存任何更改（crm_after_create：RuntimeError: boom）"
    assert count(app, "customer") == 0

    with app.app_context():
        with pytest.raises(HookFailed) as failed:
            service(app).create(CUSTOMER)
        assert failed.value.plugin == "recorder" and failed.value.hook == "crm_after_create"
        assert "Plugin recorder failed, nothing was saved" in str(failed.value)
        app.extensions["crm"].db.session.commit()
    assert count(app, "customer") == 0

    client = login(app.test_client())
    page = client.post("/customer/add", data={**CUSTOMER, "csrf_token": csrf_token(client, "/customer/add")})
    assert page.status_code == 200 and "插件 recorder 出错" in page.get_data(as_text=True)
    assert count(app, "customer") == 0
    del rec.fail["crm_after_create"]
    assert api.post("/api/v1/customer/", json=CUSTOMER).status_code == 201


def test_after_update_and_after_delete_failures_roll_back(make_app):
    rec = Recorder()
    app = with_plugins(make_app, rec)
    api = api_client(app)
    rid = api.post("/api/v1/customer/", json=CUSTOMER).json["id"]
    rec.fail["crm_after_update"] = ValueError("no")
    assert api.put(f"/api/v1/customer/{rid}", json={"name": "新名", "version": 1}).status_code == 422
    got = api.get(f"/api/v1/customer/{rid}").json["result"]
    assert (got["name"], got["version"]) == ("插件测试客户", 1)

    rec.fail = {"crm_after_delete": KeyError("x")}
    resp = api.delete(f"/api/v1/customer/{rid}")
    assert resp.status_code == 422 and "crm_after_delete" in resp.json["message"]
    assert api.get(f"/api/v1/customer/{rid}").status_code == 200


def test_before_create_and_before_delete_refusals(make_app):
    rec = Recorder()
    app = with_plugins(make_app, rec)
    api = api_client(app)
    rid = api.post("/api/v1/customer/", json=CUSTOMER).json["id"]
    rec.fail = {"crm_before_create": HookRefused("暂停新建"), "crm_before_delete": HookRefused("不许删除")}
    resp = api.post("/api/v1/customer/", json={**CUSTOMER, "name": "第二个"})
    assert resp.status_code == 422 and resp.json["message"] == "暂停新建"
    assert count(app, "customer") == 1

    resp = api.delete(f"/api/v1/customer/{rid}")
    assert resp.status_code == 422 and resp.json["message"] == "不许删除"
    client = login(app.test_client())
    page = client.post(f"/customer/delete/{rid}", data={"csrf_token": csrf_token(client, "/customer/list/")},
                       follow_redirects=True)
    assert "不许删除" in page.get_data(as_text=True)
    assert count(app, "customer") == 1


def test_what_a_hook_writes_is_rolled_back_with_the_change(make_app):
    class Writer:
        name = "writer"

        @hookimpl
        def crm_after_create(self, entity, record, session):
            session.execute(text("INSERT INTO crm_schema_state (key, value) VALUES ('writer', 'x')"))
            raise RuntimeError("after writing")

    app = with_plugins(make_app, Writer())
    assert api_client(app).post("/api/v1/customer/", json=CUSTOMER).status_code == 422
    with app.app_context():
        state = app.extensions["crm"].models.system["state"]
        rows = app.extensions["crm"].db.session.execute(select(state.c.key).where(state.c.key == "writer")).all()
    assert rows == [] and count(app, "customer") == 0


def test_a_before_hook_may_fill_in_values_but_not_unknown_fields(make_app):
    class Filler:
        name = "filler"
        extra = {"remark": "由插件填写"}

        @hookimpl
        def crm_before_create(self, data):
            data.update(self.extra)

    filler = Filler()
    app = with_plugins(make_app, filler)
    api = api_client(app)
    created = api.post("/api/v1/customer/", json=CUSTOMER)
    assert created.status_code == 201 and created.json["result"]["remark"] == "由插件填写"
    filler.extra = {"no_such_field": 1}
    resp = api.post("/api/v1/customer/", json={**CUSTOMER, "name": "第二个"})
    assert resp.status_code == 422 and "no_such_field" in resp.json["message"]
    assert count(app, "customer") == 1


# -- schema contributed by a plugin ---------------------------------------------------------------

class SchemaPlugin:
    def __init__(self, directory: Path, name: str = "labplug"):
        self.name, self.directory = name, directory

    @hookimpl
    def crm_schema_paths(self):
        return [self.directory]


NICKNAME = """\
version: 1
extend:
  contact:
    fields:
      nickname: {type: string, length: 30, label: {zh: 昵称, en: Nickname}}
    list: [nickname]
    search: [nickname]
"""


def test_a_plugin_schema_adds_a_field_to_the_api_and_the_form(make_app, tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "nickname.yaml").write_text(NICKNAME, encoding="utf-8")
    app = with_plugins(make_app, SchemaPlugin(tmp_path / "lab"))
    api = api_client(app)
    spec = api.get("/api/v1/_openapi").json
    assert "nickname" in spec["components"]["schemas"]["ContactApi.post"]["properties"]
    cust = api.post("/api/v1/customer/", json=CUSTOMER).json["id"]
    created = api.post("/api/v1/contact/", json={"customer": cust, "name": "钱七", "nickname": "小钱"})
    assert created.status_code == 201 and created.json["result"]["nickname"] == "小钱"
    assert api.get("/api/v1/contact/?search=小钱").json["count"] == 1

    client = login(app.test_client())
    assert 'name="nickname"' in client.get("/contact/add").get_data(as_text=True)
    edit = client.get(f"/contact/edit/{created.json['id']}").get_data(as_text=True)
    assert "昵称" in edit and 'value="小钱"' in edit
    assert "小钱" in client.get("/contact/list/").get_data(as_text=True)


def test_an_invalid_plugin_schema_stops_the_app_naming_the_plugin(tmp_path, capsys):
    from crm_meta.testing import make_app

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "bad.yaml").write_text(NICKNAME.replace("type: string", "type: strng"), encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        make_app(tmp_path / "app", plugins=[SchemaPlugin(tmp_path / "lab")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "bad.yaml:5:" in err and "'strng' is not one of" in err
    assert "plugin 'labplug' contributed the invalid file(s)" in err and "CRM_DISABLED_PLUGINS=labplug" in err
    assert "Traceback" not in err


# -- discovery, enabling, disabling ---------------------------------------------------------------

def _info(plugins, name):
    return plugins.info(name)


def test_bundled_example_is_discovered_but_off_by_default():
    default = load_plugins({}, strict=False)  # lenient: only crm_birthday matters here, not its neighbours
    info = _info(default, "crm_birthday")
    assert not info.enabled and "off by default" in info.reason and info.origin.startswith("bundled")
    assert _info(default, "crm_meta.builtin").enabled
    assert all("crm_birthday" not in str(p) for p in default.schema_paths())

    chosen = load_plugins({"CRM_PLUGINS": "crm_birthday"})
    assert _info(chosen, "crm_birthday").enabled and _info(chosen, "crm_birthday").version == "0.1.0"
    assert any(p.name == "schemas" and p.parent.name == "crm_birthday" for p in chosen.schema_paths())
    assert _info(chosen, "crm_meta.builtin").enabled  # CRM_PLUGINS selects among the optional ones

    off = load_plugins({"CRM_PLUGINS": "crm_birthday",
                        "CRM_DISABLED_PLUGINS": "crm_birthday, crm_meta.builtin, crm_meta.process"})
    assert not _info(off, "crm_birthday").enabled and "CRM_DISABLED_PLUGINS" in _info(off, "crm_birthday").reason
    assert not _info(off, "crm_meta.builtin").enabled and off.widgets == []


def test_disabled_plugins_contribute_nothing(tmp_path):
    from crm_meta.testing import make_app

    rec = Recorder()
    app = make_app(tmp_path, plugins=["crm_birthday", rec], CRM_DISABLED_PLUGINS="crm_birthday,recorder")
    registry = app.extensions["crm"].registry
    assert not registry.entity("contact").has_field("birthday_reminder")
    plugins = app.extensions["crm"].plugins
    assert not any(j.plugin in ("crm_birthday", "recorder") for j in plugins.jobs.values())
    assert "birthdays" not in plugins.commands
    assert api_client(app).post("/api/v1/customer/", json=CUSTOMER).status_code == 201
    assert rec.calls == []


def _write_plugin(base: Path, name: str, files: dict[str, str]) -> None:
    for rel, body in files.items():
        path = base / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body), encoding="utf-8")


HOOKS_IN_INIT = """\
    from crm_meta import hookimpl
    __version__ = "2.5"

    @hookimpl
    def crm_cli_commands():
        return []
"""


def test_bundled_layouts_and_entry_points(tmp_path, monkeypatch):
    import importlib.metadata

    n = next(_names)
    flat, split, project = f"crm_tflat{n}", f"crm_tsplit{n}", f"crm_tproj{n}"
    base = tmp_path / "plugins"
    _write_plugin(base, flat, {"__init__.py": HOOKS_IN_INIT})
    _write_plugin(base, split, {"__init__.py": "__version__ = '1.0'\n",
                                "plugin.py": "from crm_meta import hookimpl\n\n@hookimpl\ndef crm_scheduled_jobs():\n"
                                             "    return [('tick', 60, lambda build: 'ok')]\n"})
    _write_plugin(base, project, {"pyproject.toml": "[project]\nname = 'x'\n",
                                  f"src/{project}/__init__.py": HOOKS_IN_INIT})
    _write_plugin(base, "notes", {"README.md": "not a package\n"})
    entry = f"crm_tentry{n}"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / f"{entry}.py").write_text(textwrap.dedent(HOOKS_IN_INIT), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    real = importlib.metadata.entry_points

    def entry_points(**kw):
        if kw.get("group") == "crm_meta.plugins":
            return [importlib.metadata.EntryPoint("ep_plugin", entry, "crm_meta.plugins")]
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    plugins = load_plugins({"CRM_PLUGIN_PATH": str(base)})
    found = {i.name: i for i in plugins.infos}
    assert set(found) == {*BUILTINS, "ep_plugin", flat, split, project}
    assert found[flat].hooks == ["crm_cli_commands"] and found[flat].version == "2.5"
    assert found[split].hooks == ["crm_scheduled_jobs"] and found[split].version == "1.0"
    assert plugins.jobs["tick"].interval == timedelta(seconds=60) and plugins.jobs["tick"].plugin == split
    assert found[project].enabled and found[project].hooks == ["crm_cli_commands"]
    assert found["ep_plugin"].origin == "installed" and found["ep_plugin"].hooks == ["crm_cli_commands"]
    assert all(i.enabled for i in found.values())


@pytest.mark.parametrize("case", [
    "import-error", "unknown-hook", "wrong-arguments", "hook-raises", "bad-result", "command-clash", "wrapper"])
def test_a_broken_plugin_is_named(case, tmp_path):
    name = f"crm_broken{next(_names)}"
    body = {
        "import-error": "import no_such_module_here\n",
        "unknown-hook": "from crm_meta import hookimpl\n\n@hookimpl\ndef crm_befor_create(entity):\n    pass\n",
        "wrong-arguments": "from crm_meta import hookimpl\n\n@hookimpl\ndef crm_before_create(entity, payload):\n"
                           "    pass\n",
        "hook-raises": "from crm_meta import hookimpl\n\n@hookimpl\ndef crm_schema_paths():\n    return 1 / 0\n",
        "bad-result": "from crm_meta import hookimpl\n\n@hookimpl\ndef crm_scheduled_jobs():\n"
                      "    return [('Bad Name', 60, print)]\n",
        "command-clash": "import click\nfrom crm_meta import hookimpl\n\n@hookimpl\ndef crm_cli_commands():\n"
                         "    return [click.Command('check')]\n",
        "wrapper": "from crm_meta import hookimpl\n\n@hookimpl(wrapper=True)\ndef crm_after_create(entity):\n"
                   "    return (yield)\n",
    }[case]
    expected = {
        "import-error": "cannot be imported: ModuleNotFoundError: No module named 'no_such_module_here'",
        "unknown-hook": "implements the unknown hook 'crm_befor_create'",
        "wrong-arguments": "has an invalid hook",
        "hook-raises": "crm_schema_paths raised ZeroDivisionError: division by zero",
        "bad-result": "the job name 'Bad Name' is not an identifier",
        "command-clash": "the command 'crm check' is built in",
        "wrapper": "'crm_after_create' is a hook wrapper",
    }[case]
    _write_plugin(tmp_path / "plugins", name, {"__init__.py": body})
    config = {"CRM_PLUGIN_PATH": str(tmp_path / "plugins")}
    with pytest.raises(PluginError) as exc:
        load_plugins(config)
    assert exc.value.plugin == name and expected in str(exc.value), str(exc.value)
    assert str(exc.value).startswith(f"plugin '{name}': ")

    listed = load_plugins(config, strict=False)  # `crm plugins` still lists it, with the problem
    assert expected in (listed.info(name).error or "")
    assert load_plugins({**config, "CRM_DISABLED_PLUGINS": name}).info(name).enabled is False  # never imported


def test_a_broken_plugin_stops_the_app_with_its_name(tmp_path, capsys):
    from crm_meta.testing import make_app

    name = f"crm_broken{next(_names)}"
    _write_plugin(tmp_path / "plugins", name, {"__init__.py": "raise RuntimeError('half written')\n"})
    with pytest.raises(SystemExit) as exc:
        make_app(tmp_path / "app", plugins=[name], CRM_PLUGIN_PATH=str(tmp_path / "plugins"))
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert f"crm_meta: cannot start: plugin '{name}': cannot be imported: RuntimeError: half written" in err
    with pytest.raises(SystemExit):
        make_app(tmp_path / "app2", plugins=["crm_no_such_plugin"])
    assert "plugin 'crm_no_such_plugin': CRM_PLUGINS names a plugin that was not found" in capsys.readouterr().err


# -- start-up hooks: views, commands, widgets, jobs -----------------------------------------------

class ViewPlugin:
    name = "viewplug"

    @hookimpl
    def crm_register_views(self, appbuilder, build):
        from flask_appbuilder import BaseView, expose
        from flask_appbuilder.api import BaseApi
        from flask_appbuilder.api import expose as api_expose
        from flask_appbuilder.security.decorators import has_access, protect

        class ContactCountView(BaseView):
            route_base = "/contact_count"
            default_view = "index"
            class_permission_name = "contact"
            method_permission_name = {"index": "read"}
            base_permissions = ["can_read"]

            @expose("/")
            @has_access
            def index(self):
                n = build.db.session.execute(select(func.count()).select_from(build.models.model("contact")))
                return f"contacts: {n.scalar_one()}"

        class ContactCountApi(BaseApi):
            resource_name = "contact_count"
            class_permission_name = "contact"
            method_permission_name = {"count": "read"}
            base_permissions = ["can_read"]

            @api_expose("/", methods=["GET"])
            @protect()
            def count(self):
                n = build.db.session.execute(select(func.count()).select_from(build.models.model("contact")))
                return self.response(200, count=n.scalar_one())

        appbuilder.add_view(ContactCountView, "contact_count", label="Contact count", category="customers")
        appbuilder.add_api(ContactCountApi)


def _limited_client(app):
    """A signed-in user whose role grants nothing."""
    with app.app_context():
        sm = app.appbuilder.sm
        role = sm.add_role("limited")
        sm.add_user("limited", "L", "U", "limited@crm.invalid", role, "limited-pass-1")
    client = app.test_client()
    token = csrf_token(client, "/login/")
    client.post("/login/", data={"username": "limited", "password": "limited-pass-1", "csrf_token": token})
    return client


def test_register_views_adds_pages_and_apis_under_the_entity_permissions(make_app):
    app = with_plugins(make_app, ViewPlugin())
    client = login(app.test_client())
    assert client.get("/contact_count/").get_data(as_text=True) == "contacts: 0"
    assert "Contact count" in client.get("/customer/list/").get_data(as_text=True)  # menu item
    assert api_client(app).get("/api/v1/contact_count/").json == {"count": 0}

    assert app.test_client().get("/contact_count/").status_code == 302  # anonymous: to the login page
    assert app.test_client().get("/api/v1/contact_count/").status_code == 401
    limited = _limited_client(app)
    assert "contacts:" not in limited.get("/contact_count/", follow_redirects=True).get_data(as_text=True)


def test_cli_commands_of_a_plugin_belong_to_its_app(tmp_path):
    import click

    from crm_meta.testing import make_app

    class CliPlugin:
        name = "cliplug"

        @hookimpl
        def crm_cli_commands(self):
            @click.command("hello")
            @click.argument("who")
            def hello(who):
                from flask import current_app

                click.echo(f"hello {who} from {current_app.config['APP_NAME']}")
            return [hello]

    app = make_app(tmp_path / "a", plugins=[CliPlugin()])
    result = app.test_cli_runner().invoke(args=["crm", "hello", "world"])
    assert result.exit_code == 0 and result.output == "hello world from crm_meta CRM\n"
    assert "hello" in app.test_cli_runner().invoke(args=["crm", "--help"]).output
    other = make_app(tmp_path / "b")
    assert "No such command 'hello'" in other.test_cli_runner().invoke(args=["crm", "hello", "x"]).output


def test_crm_plugins_lists_versions_hooks_and_schema_files(tmp_path):
    from crm_meta.testing import make_app

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "nickname.yaml").write_text(NICKNAME, encoding="utf-8")
    app = make_app(tmp_path / "app", plugins=["crm_birthday", SchemaPlugin(tmp_path / "lab")])
    with app.app_context():
        out = app.test_cli_runner().invoke(args=["crm", "plugins"]).output
    assert "crm_birthday 0.1.0  [enabled]  bundled (plugins/crm_birthday)" in out
    assert "hooks: crm_after_create, crm_before_create, crm_before_update, crm_cli_commands" in out
    assert "schema: plugins/crm_birthday/schemas/contact_birthday.yaml" in out
    assert "labplug -  [enabled]  config" in out and "nickname.yaml" in out
    assert "crm_meta.builtin 0.1.0  [enabled]  built-in" in out


def _cli(args, **env):
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", "crm", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_crm_plugins_and_check_from_the_command_line(tmp_path):
    listed = _cli(["plugins"], CRM_DATABASE_URL=f"sqlite:///{tmp_path}/cli.db")
    assert "crm_birthday 0.1.0  [disabled]" in listed.stdout and "off by default" in listed.stdout
    assert "schema: plugins/crm_birthday/schemas/contact_birthday.yaml" in listed.stdout  # what it would add
    checked = _cli(["check"], CRM_PLUGINS="crm_birthday")
    assert checked.returncode == 0, checked.stderr
    assert "ok: 6 entities" in checked.stdout and "plugins/crm_birthday/schemas" in checked.stdout


class WidgetPlugin:
    name = "widgetplug"

    @hookimpl
    def crm_dashboard_widgets(self):
        def boom(build, actor):
            raise RuntimeError("widget exploded")
        return [
            Widget("hello", {"zh": "你好", "en": "Hello"}, lambda build, actor: "<b>hi &amp; welcome</b>", order=1),
            {"name": "contacts", "label": "Contacts", "entity": "contact",
             "render": lambda build, actor: f"<i>lang={actor.lang}</i>"},
            Widget("broken", "Broken", boom),
        ]


def test_dashboard_shows_the_widgets_a_user_may_see(make_app):
    app = with_plugins(make_app, WidgetPlugin())
    client = login(app.test_client())
    html = client.get("/").get_data(as_text=True)
    assert "<b>hi &amp; welcome</b>" in html and "你好" in html
    assert "<i>lang=zh</i>" in html
    assert "插件 widgetplug 的组件出错：RuntimeError: widget exploded" in html  # in its own box
    assert html.index('data-widget="record_counts"') < html.index('data-widget="hello"')  # by order
    assert "crm-record-counts" in html and "/customer/list/" in html  # the built-in widget

    assert 'data-widget="' not in app.test_client().get("/").get_data(as_text=True)  # anonymous
    limited = _limited_client(app).get("/").get_data(as_text=True)
    assert 'data-widget="hello"' in limited and 'data-widget="contacts"' not in limited
    assert "/customer/list/" not in limited  # record counts only for readable entities


class JobPlugin:
    name = "jobplug"

    def __init__(self):
        self.runs = 0
        self.fail = False

    @hookimpl
    def crm_scheduled_jobs(self):
        return [("count_customers", timedelta(hours=1), self.count_customers),
                ("fragile", 3600, self.fragile)]

    def count_customers(self, build):
        self.runs += 1
        n = build.db.session.execute(select(func.count()).select_from(build.models.model("customer")))
        return f"{n.scalar_one()} customers"

    def fragile(self, build):
        if self.fail:
            build.db.session.execute(text("INSERT INTO crm_schema_state (key, value) VALUES ('fragile', 'x')"))
            raise RuntimeError("job broke")
        return None


def test_jobs_run_when_due_or_named(make_app):
    plugin = JobPlugin()
    app = with_plugins(make_app, plugin)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["crm", "jobs", "run"])
    assert first.exit_code == 0, first.output
    assert "ran count_customers (jobplug): ok — 0 customers" in first.output and "ran fragile (jobplug): ok" in first.output
    again = runner.invoke(args=["crm", "jobs", "run"])
    assert "skipped count_customers (jobplug): not due before" in again.output and plugin.runs == 1
    forced = runner.invoke(args=["crm", "jobs", "run", "count_customers"])
    assert "ran count_customers" in forced.output and "fragile" not in forced.output and plugin.runs == 2
    listed = runner.invoke(args=["crm", "jobs", "list"]).output
    assert "count_customers  every 1:00:00  (jobplug)  last run" in listed and " ok; due " in listed

    plugin.fail = True
    broke = runner.invoke(args=["crm", "jobs", "run", "fragile"])
    assert broke.exit_code == 1 and "FAILED fragile (plugin jobplug): RuntimeError: job broke" in broke.output
    with app.app_context():
        state = app.extensions["crm"].models.system["state"]
        session = app.extensions["crm"].db.session
        assert session.execute(select(state.c.key).where(state.c.key == "fragile")).all() == []  # rolled back
    assert "FAILED: RuntimeError: job broke" in runner.invoke(args=["crm", "jobs", "list"]).output
    unknown = runner.invoke(args=["crm", "jobs", "run", "nope"])
    assert unknown.exit_code != 0 and "no job named 'nope'" in unknown.output


def test_a_job_claimed_by_another_runner_is_skipped(tmp_path):
    from crm_meta.services import jobs
    from crm_meta.testing import make_app

    plugin = JobPlugin()
    app = make_app(tmp_path, plugins=[plugin])
    with app.app_context():
        b = app.extensions["crm"]
        table, session, job = b.models.system["state"], b.db.session, b.plugins.jobs["count_customers"]
        seen = jobs.state_of(session, table, job.name)  # both runners read "never run" …
        assert jobs._claim(session, table, job.name, seen, '{"started": "2026-01-01T00:00:00"}')
        assert not jobs._claim(session, table, job.name, seen, '{"started": "2026-01-01T00:00:01"}')  # … one wins
        later = jobs.state_of(session, table, job.name)
        assert jobs._claim(session, table, job.name, later, '{"started": "2026-01-01T01:00:00"}')
        assert not jobs._claim(session, table, job.name, later, '{"started": "2026-01-01T01:00:01"}')
    assert plugin.runs == 0
