"""Field types added by plugins (hook ``crm_field_types``) and the built-in types registered through it.

A plugin type is built on a built-in base type (column, widget, REST schema) and adds a normaliser, a
pattern and a check. Types belong to one app: apps with different plugins are built in this one process
and an app without the plugin refuses the type. The example plugin ``crm_birthday`` declares
``wechat_id`` (used by ``contact.wechat``); the app tests run on SQLite and PostgreSQL (conftest's
``make_app``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select
from support import csrf_token, login

from crm_meta import hookimpl
from crm_meta.errors import PluginError, SchemaErrors
from crm_meta.metadata.fieldtypes import FIELD_TYPES, CustomType, FieldTypes
from crm_meta.plugins import load_plugins
from crm_meta.schema import load_registry
from crm_meta.schema.structure import json_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
CUSTOMER = {"name": "类型测试客户", "customer_type": "prospect", "industry": "finance", "contact_name": "赵六",
            "contact_phone": "13700000000"}
WECHAT_MESSAGE_ZH = "微信号为 6–20 位字母、数字、- 或 _，以字母开头"
WECHAT_MESSAGE_EN = "a WeChat ID has 6-20 letters, digits, - or _ and starts with a letter"


def wechat_file(directory: Path, body: str = "{type: wechat_id, label: {zh: 微信号, en: WeChat ID}}") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "wechat.yaml").write_text(f"version: 1\nextend:\n  customer:\n    fields:\n      wechat: {body}\n",
                                           encoding="utf-8")
    return directory


class TypePlugin:
    """A plugin object declaring ``types`` (and contributing the files under ``schemas``, if given)."""

    def __init__(self, name: str, types, schemas: Path | None = None):
        self.name, self.types, self.schemas = name, types, schemas

    @hookimpl
    def crm_field_types(self):
        if isinstance(self.types, Exception):
            raise self.types
        return self.types

    @hookimpl
    def crm_schema_paths(self):
        return [self.schemas] if self.schemas else []


def with_plugins(make_app, *plugins, schema_path=None, **config):
    given = [(p.name, p) for p in plugins]
    return make_app(schema_path, CRM_PLUGINS=[n for n, _ in given], CRM_EXTRA_PLUGINS=given, **config)


def dispose(app) -> None:
    with app.app_context():
        app.extensions["crm"].db.session.remove()
        app.extensions["crm"].db.engine.dispose()


# -- the built-in types come through the hook ------------------------------------------------------

def test_the_built_in_types_come_through_the_hook():
    plugins = load_plugins({"CRM_PLUGINS": []})
    types = plugins.field_types()
    assert "crm_field_types" in plugins.info("crm_meta.builtin").hooks
    assert dict(plugins.each("crm_field_types"))["crm_meta.builtin"] == list(FIELD_TYPES.values())
    assert types.names == tuple(FIELD_TYPES) and all(types.plugin_of(n) == "crm_meta.builtin" for n in FIELD_TYPES)
    assert [t.name for t in types] == json_schema()["$defs"]["field"]["properties"]["type"]["enum"]
    assert types.custom_types == ()

    # the standard types are the language's own: they stay when crm_meta.builtin is turned off
    off = load_plugins({"CRM_PLUGINS": [], "CRM_DISABLED_PLUGINS": "crm_meta.builtin"})
    assert off.field_types().names == tuple(FIELD_TYPES) and off.field_types().plugin_of("string") == "crm_meta"


def test_a_plugin_type_joins_the_built_in_ones_of_that_app_only():
    with_type = load_plugins({"CRM_PLUGINS": "crm_birthday"}).field_types()
    assert with_type.names == tuple(FIELD_TYPES) + ("wechat_id",)
    assert with_type.plugin_of("wechat_id") == "crm_birthday" and with_type.custom("wechat_id").plugin == "crm_birthday"
    kind = with_type.get("wechat_id")
    assert (kind.storage, kind.base, kind.length, kind.text_search) == ("string", "string", 20, True)
    assert "wechat_id" not in load_plugins({"CRM_PLUGINS": []}).field_types()  # built in the same process
    assert "wechat_id" not in FIELD_TYPES


# -- the dictionary: validation with the app's types ------------------------------------------------

def test_the_dictionary_validates_with_the_apps_types(tmp_path):
    types = load_plugins({"CRM_PLUGINS": "crm_birthday"}).field_types()
    files = wechat_file(tmp_path / "ok")
    registry = load_registry([SCHEMAS, files], field_types=types)
    wechat = registry.entity("customer").field("wechat")
    assert (wechat.type, wechat.base, wechat.storage, wechat.max_length) == ("wechat_id", "string", "string", 20)
    assert wechat.custom is types.custom("wechat_id") and registry.field_types is types

    with pytest.raises(SchemaErrors) as refused:  # the same files, built-in types only
        load_registry([SCHEMAS, files])
    assert "'wechat_id' is not one of ['string', 'text'" in refused.value.report()

    typo = wechat_file(tmp_path / "typo", "{type: wechat_di, label: 微信}")
    with pytest.raises(SchemaErrors) as misspelt:
        load_registry([SCHEMAS, typo], field_types=types)
    assert "(did you mean 'wechat_id'?)" in misspelt.value.report()

    keys = wechat_file(tmp_path / "keys", "{type: wechat_id, label: 微信, min: 3, length: 30}")
    with pytest.raises(SchemaErrors) as bad_key:
        load_registry([SCHEMAS, keys], field_types=types)
    report = bad_key.value.report()
    assert "'min' does not apply to a wechat_id field (only for: integer, decimal, money)" in report
    assert "length" not in report  # a key of its base

    default = wechat_file(tmp_path / "default", "{type: wechat_id, label: 微信, default: wxid_abcdef}")
    with pytest.raises(SchemaErrors) as bad_default:
        load_registry([SCHEMAS, default], field_types=types)
    assert "the default is refused by the field type 'wechat_id': give the WeChat ID the contact chose" \
        in bad_default.value.report()


def test_a_plugin_type_changes_the_digest_when_its_column_would(tmp_path):
    files = wechat_file(tmp_path / "ok")
    short = FieldTypes.collect([("t", [CustomType("wechat_id", "string", length=20)])]).with_builtins()
    longer = FieldTypes.collect([("t", [CustomType("wechat_id", "string", length=40)])]).with_builtins()
    assert load_registry([SCHEMAS, files], field_types=short).digest != \
        load_registry([SCHEMAS, files], field_types=longer).digest
    # types that no field uses leave the digest alone
    assert load_registry([SCHEMAS], field_types=short).digest == load_registry([SCHEMAS]).digest


def _check(args, **env):
    from crm_meta.cli import crm

    return CliRunner().invoke(crm, ["check", *args], env={"CRM_PLUGINS": None, "CRM_DISABLED_PLUGINS": None, **env})


def test_crm_check_knows_the_enabled_plugins_types(tmp_path):
    ok = _check([], CRM_PLUGINS="crm_birthday")
    assert ok.exit_code == 0, ok.output
    assert "ok: " in ok.output and "crm_birthday" in ok.output

    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    wechat_file(schemas)
    with_plugin = _check([str(schemas)], CRM_PLUGINS="crm_birthday")
    assert with_plugin.exit_code == 0, with_plugin.output

    without = _check([str(schemas)], CRM_DISABLED_PLUGINS="crm_birthday")
    assert without.exit_code == 1
    assert "wechat.yaml:5:" in without.output and "'wechat_id' is not one of ['string'" in without.output
    assert "Traceback" not in without.output


def test_an_app_without_the_plugin_refuses_the_type(make_app, tmp_path, capsys):
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    wechat_file(schemas)
    with pytest.raises(SystemExit) as stopped:
        make_app(schemas, CRM_PLUGINS=[])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "the data dictionary is invalid" in err and "wechat.yaml:5:" in err and "'wechat_id' is not one of" in err

    app = make_app(schemas, CRM_PLUGINS=["crm_birthday"])  # the same files, with the plugin: fine
    assert app.extensions["crm"].registry.entity("customer").field("wechat").base == "string"


# -- values: REST, screens, OpenAPI ------------------------------------------------------------------

@pytest.fixture
def birthday_app(make_app):
    return make_app(CRM_PLUGINS=["crm_birthday"])


@pytest.fixture
def birthday_api(birthday_app):
    from support import ADMIN_PASSWORD, Api

    c = birthday_app.test_client()
    token = c.post("/api/v1/security/login", json={"username": "admin", "password": ADMIN_PASSWORD,
                                                   "provider": "db"}).json["access_token"]
    return Api(c, token)


@pytest.fixture
def customer(birthday_api):
    resp = birthday_api.post("/api/v1/customer/", json=CUSTOMER)
    assert resp.status_code == 201, resp.json
    return resp.json["id"]


def stored_wechat(app):
    with app.app_context():
        b = app.extensions["crm"]
        contact = b.models.model("contact")
        return b.db.session.execute(select(contact.wechat).order_by(contact.id)).scalars().all()


def test_a_bad_value_is_refused_on_the_rest_api_and_a_good_one_normalised(birthday_app, birthday_api, customer):
    api = birthday_api
    bad = api.post("/api/v1/contact/", json={"customer": customer, "name": "张三", "wechat": "1abc"})
    assert bad.status_code == 422 and bad.json["message"] == {"wechat": [WECHAT_MESSAGE_ZH]}
    generated = api.post("/api/v1/contact/", json={"customer": customer, "name": "张三", "wechat": "wxid_abcdef"})
    assert generated.status_code == 422
    assert generated.json["message"] == {"wechat": ["请填写自己设置的微信号，而不是系统生成的 wxid_ 号"]}
    too_long = api.post("/api/v1/contact/", json={"customer": customer, "name": "张三", "wechat": "a" * 21})
    assert too_long.status_code == 422 and too_long.json["message"]["wechat"] == ["长度不能超过 20 个字符"]
    assert stored_wechat(birthday_app) == []

    good = api.post("/api/v1/contact/", json={"customer": customer, "name": "张三", "wechat": " WX Zhang-San "})
    assert good.status_code == 201, good.json
    rid = good.json["id"]
    assert good.json["result"]["wechat"] == "wxzhang-san"
    assert api.get(f"/api/v1/contact/{rid}").json["result"]["wechat"] == "wxzhang-san"
    assert stored_wechat(birthday_app) == ["wxzhang-san"]
    assert api.get("/api/v1/contact/?search=wxzhang").json["count"] == 1  # search: [wechat]

    refused = api.put(f"/api/v1/contact/{rid}", json={"wechat": "wxid_zzzzzz", "version": 1})
    assert refused.status_code == 422 and list(refused.json["message"]) == ["wechat"]
    changed = api.put(f"/api/v1/contact/{rid}", json={"wechat": "Li_Si-2024", "version": 1})
    assert changed.status_code == 200 and changed.json["result"]["wechat"] == "li_si-2024"
    cleared = api.put(f"/api/v1/contact/{rid}", json={"wechat": "", "version": 2})
    assert cleared.status_code == 200 and cleared.json["result"]["wechat"] is None

    info = api.get("/api/v1/contact/_info").json
    field = next(f for f in info["fields"] if f["name"] == "wechat")
    assert (field["type"], field["base"], field["max_length"]) == ("wechat_id", "string", 20)

    with birthday_app.app_context():  # the column is the base's, with the type's length
        engine = birthday_app.extensions["crm"].db.engine
        column = next(c for c in inspect(engine).get_columns("contact") if c["name"] == "wechat")
        assert column["type"].length == 20


def test_a_bad_value_is_refused_on_the_form(birthday_app, birthday_api, customer):
    client = login(birthday_app.test_client())
    client.get("/lang/en")
    page = client.get("/contact/add").get_data(as_text=True)
    assert 'name="wechat"' in page and "WeChat ID" in page
    form = {"customer": str(customer), "name": "王五", "owner": "1", "wechat": "1abc"}
    refused = client.post("/contact/add", data={**form, "csrf_token": csrf_token(client, "/contact/add")})
    assert refused.status_code == 200 and WECHAT_MESSAGE_EN in refused.get_data(as_text=True)
    assert stored_wechat(birthday_app) == []

    saved = client.post("/contact/add", data={**form, "wechat": "Wang Wu_88",
                                             "csrf_token": csrf_token(client, "/contact/add")})
    assert saved.status_code == 302, saved.get_data(as_text=True)
    assert stored_wechat(birthday_app) == ["wangwu_88"]


def test_openapi_shows_the_base_type_with_the_pattern(birthday_api):
    spec = birthday_api.get("/api/v1/_openapi").json
    shown = [s["properties"]["wechat"] for name, s in spec["components"]["schemas"].items()
             if name.startswith("ContactApi") and "wechat" in s.get("properties", {})]
    assert shown
    for prop in shown:
        assert prop["type"] == "string" and prop["maxLength"] == 20 and prop["x-crm-type"] == "wechat_id"
        assert prop["pattern"] == r"^[a-zA-Z][-_a-zA-Z0-9]{5,19}$"
        assert "wechat_id" in prop["description"]


def test_types_on_other_bases_and_their_checks(make_app, tmp_path):
    """Non-text bases: an integer with a check, a phone with a normaliser; their own YAML via crm_schema_paths."""
    def even(value):
        return None if value % 2 == 0 else {"zh": "必须是双数", "en": "must be even"}

    def boom(value):
        raise RuntimeError("lookup service down")

    types = [CustomType("pair_count", "integer", label={"zh": "双数", "en": "pair count"}, check=even),
             CustomType("cn_mobile", "phone", label={"zh": "手机号", "en": "mobile number"},
                        pattern=r"^1[3-9]\d{9}$", normalize=lambda t: t.replace(" ", "").removeprefix("+86")),
             CustomType("flaky", "string", check=boom)]
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "types.yaml").write_text(
        "version: 1\nextend:\n  customer:\n    fields:\n"
        "      pairs: {type: pair_count, label: 双数, min: 0}\n"
        "      mobile: {type: cn_mobile, label: 手机, unique: true}\n"
        "      flaky: {type: flaky, label: 不稳定}\n", encoding="utf-8")
    app = with_plugins(make_app, TypePlugin("crm_types", types, lab))
    try:
        from support import ADMIN_PASSWORD, Api

        c = app.test_client()
        token = c.post("/api/v1/security/login", json={"username": "admin", "password": ADMIN_PASSWORD,
                                                       "provider": "db"}).json["access_token"]
        api = Api(c, token)
        odd = api.post("/api/v1/customer/", json={**CUSTOMER, "pairs": 3})
        assert odd.status_code == 422 and odd.json["message"] == {"pairs": ["必须是双数"]}
        negative = api.post("/api/v1/customer/", json={**CUSTOMER, "pairs": -2})
        assert negative.status_code == 422 and negative.json["message"] == {"pairs": ["不能小于 0"]}  # base's min
        not_mobile = api.post("/api/v1/customer/", json={**CUSTOMER, "mobile": "010-12345678"})
        assert not_mobile.status_code == 422 and not_mobile.json["message"] == {"mobile": ["不是有效的手机号"]}
        failing = api.post("/api/v1/customer/", json={**CUSTOMER, "flaky": "x"})
        assert failing.status_code == 422
        assert failing.json["message"]["flaky"] == ["字段类型 flaky（插件 crm_types）的检查出错：RuntimeError: lookup service down"]

        ok = api.post("/api/v1/customer/", json={**CUSTOMER, "pairs": "4", "mobile": "+86 138 0013 8000"})
        assert ok.status_code == 201, ok.json
        assert ok.json["result"]["pairs"] == 4 and ok.json["result"]["mobile"] == "13800138000"
        twice = api.post("/api/v1/customer/", json={**CUSTOMER, "name": "另一个", "mobile": "13800138000"})
        assert twice.status_code == 422 and "mobile" in twice.json["message"]  # unique, after normalising
        with app.app_context():
            columns = {c["name"]: c for c in inspect(app.extensions["crm"].db.engine).get_columns("customer")}
            assert columns["pairs"]["type"].python_type is int
            assert columns["mobile"]["type"].length == 32  # the phone base's length
    finally:
        dispose(app)


# -- plugins that get it wrong -----------------------------------------------------------------------

WECHAT = CustomType("wechat_id", "string", pattern=r"^[a-z][-_a-z0-9]{5,19}$")


def test_two_plugins_declaring_the_same_type_stop_the_app_naming_both(make_app, capsys):
    first, second = TypePlugin("crm_wx_one", [WECHAT]), TypePlugin("crm_wx_two", [WECHAT])
    with pytest.raises(PluginError) as clash:
        load_plugins({"CRM_PLUGINS": ["crm_wx_one", "crm_wx_two"], "CRM_EXTRA_PLUGINS":
                      [("crm_wx_one", first), ("crm_wx_two", second)]})
    assert str(clash.value) == ("plugin 'crm_wx_two': the field type 'wechat_id' is already added by plugin "
                                "'crm_wx_one'; choose another name")

    with pytest.raises(SystemExit) as stopped:
        with_plugins(make_app, first, second)
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "cannot start" in err and "crm_wx_one" in err and "crm_wx_two" in err and "'wechat_id'" in err

    with pytest.raises(PluginError) as with_birthday:  # and against the example plugin's own wechat_id
        load_plugins({"CRM_PLUGINS": ["crm_birthday", "crm_wx_one"], "CRM_EXTRA_PLUGINS": [("crm_wx_one", first)]})
    assert "crm_birthday" in str(with_birthday.value) and "crm_wx_one" in str(with_birthday.value)


@pytest.mark.parametrize("spec, problem", [
    (dict(name="string", base="string"), "the name is a built-in type's"),
    (dict(name="Wechat", base="string"), "lower-case identifier"),
    (dict(name="country", base="enum"), "base must be one of string, text"),
    (dict(name="even", base="integer", pattern=r"^\d+$"), "pattern is for text bases only"),
    (dict(name="code", base="string", pattern="("), "invalid pattern"),
    (dict(name="code", base="text", length=10), "length is for string bases only"),
    (dict(name="code", base="string", keys=["min"]), "keys min do not apply to its base string"),
    (dict(name="code", base="string", check="not callable"), "check must be a function"),
])
def test_a_bad_type_declaration_is_refused(spec, problem):
    with pytest.raises(ValueError, match=problem):
        CustomType(**spec)


def test_what_a_check_may_return():
    valid = CustomType("code", "string", label={"zh": "代码", "en": "code"}, check=lambda v: v != "bad")
    assert valid.refusal("good") is None
    assert valid.refusal("bad") == valid.messages() == {"zh": "不是有效的代码", "en": "is not a valid code"}
    said = CustomType("code", "string", check=lambda v: None if v.isupper() else "upper case only")
    assert said.refusal("ABC") is None and said.refusal("abc") == {"zh": "upper case only", "en": "upper case only"}
    both = CustomType("code", "string", message="格式不对", pattern=r"[A-Z]+")
    assert both.refusal("abc") == {"zh": "格式不对", "en": "格式不对"} and both.refusal("ABC") is None


@pytest.mark.parametrize("returned, problem", [
    (["wechat_id"], "crm_field_types returned 'wechat_id', not a crm_meta.metadata.fieldtypes.CustomType"),
    (WECHAT, "crm_field_types must return a list of field types"),
    (ValueError("field type 'x': base must be one of"), "crm_field_types raised ValueError"),
])
def test_a_bad_hook_result_names_the_plugin(returned, problem):
    plugin = TypePlugin("crm_bad_types", returned)
    with pytest.raises(PluginError) as exc:
        load_plugins({"CRM_PLUGINS": ["crm_bad_types"], "CRM_EXTRA_PLUGINS": [("crm_bad_types", plugin)]})
    assert exc.value.plugin == "crm_bad_types" and problem in str(exc.value)


def test_a_plugin_may_not_return_a_built_in_type_again():
    plugin = TypePlugin("crm_again", [FIELD_TYPES["string"]])
    with pytest.raises(PluginError, match="the field type 'string' is already added by plugin 'crm_meta.builtin'"):
        load_plugins({"CRM_PLUGINS": ["crm_again"], "CRM_EXTRA_PLUGINS": [("crm_again", plugin)]})


# -- the schema service (crm schema plan/apply) uses the app's types ---------------------------------

def test_the_schema_service_validates_with_the_apps_types(birthday_app):
    from flask_appbuilder.security.sqla.models import User

    from crm_meta.schema.overlay import Overlay
    from crm_meta.services.schema_changes import SchemaChanges
    from crm_meta.settings import schema_paths

    b = birthday_app.extensions["crm"]
    paths = schema_paths(birthday_app.config) + [str(p) for p in b.models.plugins.schema_paths()]
    with birthday_app.app_context():
        service = SchemaChanges(b.db.engine, paths, User, field_types=b.models.plugins.field_types())
        assert service.registry(Overlay()).entity("contact").field("wechat").type == "wechat_id"
        with pytest.raises(SchemaErrors, match="'wechat_id' is not one of"):
            SchemaChanges(b.db.engine, paths, User).registry(Overlay())  # no types given: built-in only
