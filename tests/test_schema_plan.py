"""Changing the model on a live database (issue 3): plan, apply, drift, export and import — on SQLite and PostgreSQL.

The admins' overlay (crm_meta.schema.overlay) is changed through crm_meta.services.schema_changes.SchemaChanges,
the service the CLI (``flask --app app crm schema …``) and the schema screens share; the plan text asserted here is
what an admin reads (``Plan.report()``, ``crm schema plan``). The CRM is built once per backend (module scope) on a
template database holding three customers; each test works on its own copy of it (a file copy on SQLite,
``CREATE DATABASE … TEMPLATE`` on PostgreSQL), so no test sees another's changes.
"""
from __future__ import annotations

import itertools
import json
import re
import secrets
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import psycopg
import pytest
import yaml
from flask import Flask
from psycopg import sql as pgsql
from sqlalchemy import MetaData, Table, create_engine, inspect, select, text

import crm_meta.db.engine  # noqa: F401  (SQLite pragmas on every connection, as the app has them)
from crm_meta.cli import crm
from crm_meta.errors import MigrationError
from crm_meta.schema.overlay import CustomEntity, CustomField, Overlay, field_spec
from crm_meta.services import schema_changes as sc_mod
from crm_meta.services.schema_changes import (DIGEST_KEY, SNAPSHOT_KEY, SchemaChanges, generation, get_state,
                                              read_overlay, write_overlay)
from support import ADMIN_PASSWORD, login

ROOT = Path(__file__).resolve().parents[1]


def _schema_files() -> dict[Path, bytes]:
    """The dictionary files, schemas/ and the plugins': the overlay must never edit them."""
    return {p: p.read_bytes() for p in sorted([*(ROOT / "schemas").rglob("*.yaml"),
                                               *(ROOT / "plugins").rglob("*.yaml")])}


_names = itertools.count(1)


# ------------------------------------------------------------------------------------------------
# Databases: one CRM build per backend, a fresh copy per test
# ------------------------------------------------------------------------------------------------

@dataclass
class Template:
    backend: str
    url: str
    config: dict
    paths: list
    field_types: object
    customers: list[int]
    pg: object = None
    dbname: str = ""

    def clone(self, tmp_path: Path) -> tuple[str, str]:
        """(url, name) of a new database with the template's tables and rows."""
        n = next(_names)
        if self.backend == "sqlite":
            target = tmp_path / f"crm-{n}.db"
            src, dst = sqlite3.connect(self.url.removeprefix("sqlite:///")), sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            return f"sqlite:///{target}", ""
        name = f"schema_plan_{n}"
        with psycopg.connect(host=self.pg.host, port=self.pg.port, user=self.pg.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                         "AND pid <> pg_backend_pid()", (self.dbname,))
            conn.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                pgsql.Identifier(name), pgsql.Identifier(self.dbname)))
        return self.pg.url(name), name


def _customer_row(i: int, owner: int) -> dict:
    now = datetime(2026, 1, 2, 3, 4, 5)
    return {"version": 1, "customer_no": f"C20260102{i:03d}", "name": f"测试客户{i}有限公司", "customer_type": "prospect",
            "industry": "retail", "contact_name": "张三", "contact_phone": "13800000000", "owner_id": owner,
            "created_at": now, "updated_at": now}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def template(request, tmp_path_factory):
    from app import create_app
    from crm_meta.cli import ensure_admin
    from crm_meta.settings import schema_paths

    backend = request.param
    work = tmp_path_factory.mktemp(f"schema-plan-{backend}")
    pg, dbname = None, ""
    if backend == "sqlite":
        url = f"sqlite:///{work / 'template.db'}"
    else:
        pg = request.getfixturevalue("pg_server")
        dbname = f"schema_plan_template_{next(_names)}"
        url = pg.create_database(dbname)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "INSTANCE_PATH": str(work / "instance"),
                      "SECRET_KEY": secrets.token_hex(16), "TESTING": True, "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD})
    with app.app_context():
        ensure_admin(ADMIN_PASSWORD)
        build = app.extensions["crm"]
        paths = schema_paths(app.config) + [str(p) for p in build.models.plugins.schema_paths()]
        field_types = build.models.plugins.field_types()
        admin = app.appbuilder.sm.find_user(username="admin").id
        table = build.models.model("customer").__table__
        with build.db.engine.begin() as conn:
            conn.execute(table.insert(), [_customer_row(i, admin) for i in (1, 2, 3)])
            ids = list(conn.execute(select(table.c.id).order_by(table.c.id)).scalars())
        config = {k: v for k, v in app.config.items()}
        build.db.session.remove()
        build.db.engine.dispose()
    yield Template(backend, url, config, paths, field_types, ids, pg, dbname)
    if pg is not None:
        pg.drop_database(dbname)


class Db:
    """One test's database: the service, the CLI and what is in it."""

    def __init__(self, template: Template, tmp_path: Path):
        self.template = template
        self.backend = template.backend
        self.tmp = tmp_path
        self.url, self.pg_name = template.clone(tmp_path)
        self.engine = create_engine(self.url)
        self.backups = tmp_path / f"backups-{next(_names)}"
        self.instance = tmp_path / f"instance-{next(_names)}"
        from flask_appbuilder.security.sqla.models import User

        self.service = SchemaChanges(self.engine, template.paths, User, backup_dir=self.backups,
                                     field_types=template.field_types)
        self.ids = list(template.customers)

    def close(self) -> None:
        self.engine.dispose()
        if self.pg_name:
            self.template.pg.drop_database(self.pg_name)

    # -- the CLI, with this database in the app's config -------------------------------------------
    def cli(self, *args: str):
        app = Flask("crm_meta.test_schema_plan", instance_path=str(self.instance))
        app.config.update(self.template.config)
        app.config["SQLALCHEMY_DATABASE_URI"] = self.url
        with app.app_context():
            return app.test_cli_runner().invoke(crm, ["schema", *args])

    # -- data -------------------------------------------------------------------------------------
    def execute(self, statement: str, **params) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(statement), params)

    def set_values(self, column: str, values: list, table: str = "customer") -> None:
        """``values[i]`` into ``column`` of the i-th customer."""
        with self.engine.begin() as conn:
            for rid, value in zip(self.ids, values):
                conn.execute(text(f"UPDATE {table} SET {column} = :v WHERE id = :i"), {"v": value, "i": rid})

    def values(self, column: str, table: str = "customer") -> list:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(text(f"SELECT {column} FROM {table} ORDER BY id"))]

    def insert(self, table: str, rows: list[dict]) -> None:
        with self.engine.begin() as conn:
            t = Table(table, MetaData(), autoload_with=conn)
            conn.execute(t.insert(), rows)

    def columns(self, table: str = "customer") -> dict[str, str]:
        with self.engine.connect() as conn:
            return {c["name"]: str(c["type"]) for c in inspect(conn).get_columns(table)}

    def indexes(self, table: str = "customer") -> dict[str, tuple]:
        with self.engine.connect() as conn:
            return {i["name"]: (tuple(i["column_names"]), bool(i["unique"])) for i in inspect(conn).get_indexes(table)}

    def tables(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(inspect(conn).get_table_names())

    def state(self) -> dict:
        """Everything an apply may touch: the overlay, every table's shape, the data, generation, snapshot."""
        with self.engine.connect() as conn:
            insp = inspect(conn)
            names = sorted(insp.get_table_names())
            columns = insp.get_multi_columns(filter_names=names)
            indexes = insp.get_multi_indexes(filter_names=names)
            uniques = insp.get_multi_unique_constraints(filter_names=names)
            fks = insp.get_multi_foreign_keys(filter_names=names)
            shape = {t: {"columns": [(c["name"], str(c["type"]), c["nullable"]) for c in columns[(None, t)]],
                         "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                           for i in indexes.get((None, t), ())),
                         "unique": sorted((u["name"], tuple(u["column_names"])) for u in uniques.get((None, t), ())),
                         "fks": sorted((f["name"] or "", tuple(f["constrained_columns"]), f["referred_table"])
                                       for f in fks.get((None, t), ()))}
                     for t in names}
            data = {t: sorted((tuple(r) for r in conn.execute(text(f"SELECT * FROM {t}"))), key=repr)
                    for t in ("customer", "gadget", "crm_dict_item", "crm_schema_overlay") if t in names}
            return {"tables": shape, "data": data, "overlay": read_overlay(conn), "generation": generation(conn),
                    "snapshot": get_state(conn, SNAPSHOT_KEY), "digest": get_state(conn, DIGEST_KEY)}

    def backup_files(self) -> list[Path]:
        return sorted(self.backups.glob("*")) if self.backups.exists() else []

    def stash(self, overlay: Overlay) -> None:
        """Store an overlay without applying it (as if written by another release): the CLI's plan shows it."""
        with self.engine.begin() as conn:
            write_overlay(conn, overlay)


@pytest.fixture
def fresh(template, tmp_path):
    """Factory of fresh databases (copies of the template)."""
    made: list[Db] = []

    def make() -> Db:
        made.append(Db(template, tmp_path))
        return made[-1]

    yield make
    for db in made:
        db.close()


@pytest.fixture
def db(fresh) -> Db:
    return fresh()


# ------------------------------------------------------------------------------------------------
# Overlay building blocks
# ------------------------------------------------------------------------------------------------

def string_field(name: str, length: int = 40, entity: str = "customer", **options) -> CustomField:
    return CustomField(entity, name, field_spec("string", f"{name}中文", name.title(), length=length, **options))


def add(*fields: CustomField) -> Callable[[Overlay], Overlay]:
    def change(overlay: Overlay) -> Overlay:
        for f in fields:
            overlay = overlay.with_field(f)
        return overlay
    return change


GADGET = CustomEntity("gadget", {
    "label": {"zh": "小工具", "en": "Gadget"},
    "fields": {
        "title": {"type": "string", "length": 40, "required": True, "label": {"zh": "标题", "en": "Title"}},
        "qty": {"type": "integer", "label": {"zh": "数量", "en": "Quantity"}},
    },
})


def wide_entity(name: str, fields: dict) -> Callable[[Overlay], Overlay]:
    return lambda o: o.with_entity(CustomEntity(name, {"label": {"zh": "宽表", "en": "Wide"}, "fields": fields}))


def plan_lines(report: str) -> list[str]:
    return [line.strip() for line in report.splitlines()[1:]]


# ------------------------------------------------------------------------------------------------
# 1. The plan of each kind of change, what it does to the data
# ------------------------------------------------------------------------------------------------

@dataclass
class Case:
    change: Callable[[Overlay], Overlay]
    lines: Callable[[Db], list[str]]  # the report's lines after its header, as the admin reads them
    before: Callable[[Db], None] | None = None
    after: Callable[[Db], None] | None = None
    destructive: int = 0
    blocked: int = 0


def _gadget_before(db: Db) -> None:
    db.service.apply(lambda o: o.with_entity(GADGET))
    now = datetime(2026, 1, 1)
    db.insert("gadget", [{"version": 1, "title": t, "qty": 1, "created_at": now, "updated_at": now} for t in "ab"])


def _after_add_table(db: Db) -> None:
    cols = db.columns("gadget")
    assert {"id", "version", "title", "qty", "created_at", "created_by_id", "updated_at"} <= set(cols)
    assert cols["title"] == "VARCHAR(40)"
    now = datetime(2026, 1, 1)
    db.insert("gadget", [{"version": 1, "title": "扳手", "qty": 3, "created_at": now, "updated_at": now}])
    assert db.values("title", "gadget") == ["扳手"]


def _with(name: str, length: int, values: list, **options) -> Callable[[Db], None]:
    def before(db: Db) -> None:
        db.service.apply(add(string_field(name, length, **options)), tables={"customer"})
        db.set_values(name, values)
    return before


def _after_values(column: str, expected: list, type_: str | None = None) -> Callable[[Db], None]:
    def after(db: Db) -> None:
        assert db.values(column) == expected
        if type_:
            assert db.columns()[column] == type_
    return after


def _after_gone(column: str = "", table: str = "") -> Callable[[Db], None]:
    def after(db: Db) -> None:
        if column:
            assert column not in db.columns()
            assert db.values("name") == [f"测试客户{i}有限公司" for i in (1, 2, 3)]  # the rest is kept
        if table:
            assert table not in db.tables()
    return after


def _after_integers(db: Db) -> None:
    assert db.values("code") == [42, 7, -3] and all(type(v) is int for v in db.values("code"))
    assert db.columns()["code"] == "INTEGER"
    if db.backend == "sqlite":  # stored as integers, not text that looks like one
        assert db.values("typeof(code)") == ["integer"] * 3


def _after_rename(db: Db) -> None:
    assert "wechat" not in db.columns() and db.values("weixin") == ["wx-1", None, "wx-3"]


def _after_required_default(db: Db) -> None:
    assert db.values("tier") == ["std"] * 3
    with db.engine.connect() as conn:
        col = next(c for c in inspect(conn).get_columns("customer") if c["name"] == "tier")
    assert col["nullable"] is False


def _after_add_column(db: Db) -> None:
    assert db.columns()["wechat"] == "VARCHAR(40)" and db.values("wechat") == [None, None, None]
    _assert_index(db, "ix_customer_wechat", ("wechat",))
    assert db.values("name") == [f"测试客户{i}有限公司" for i in (1, 2, 3)]


CODE = lambda kind, **o: CustomField("customer", "code", field_spec(kind, "编码", "Code", **o))  # noqa: E731

CASES = {
    "add_table": Case(
        lambda o: o.with_entity(GADGET),
        lambda db: ["+ [safe] add table gadget (8 columns)",
                    "+ [safe] add index ix_gadget_created_at on gadget (gadget.created_at)",
                    "+ [safe] add index ix_gadget_created_by_id on gadget (gadget.created_by_id)",
                    "+ [safe] add index ix_gadget_updated_by_id on gadget (gadget.updated_by_id)"],
        after=_after_add_table),
    "add_index": Case(
        add(string_field("wechat", indexed=True)),
        lambda db: ["+ [safe] add index ix_customer_wechat on customer (customer.wechat)"],
        before=_with("wechat", 40, ["a", "b", None]),
        after=lambda db: _assert_index(db, "ix_customer_wechat", ("wechat",))),
    "add_column_with_index": Case(
        add(string_field("wechat", indexed=True)),
        lambda db: ["+ [safe] add column customer.wechat VARCHAR(40)",
                    "+ [safe] add index ix_customer_wechat on customer (customer.wechat)"],
        after=_after_add_column),
    "widen": Case(
        add(string_field("wechat", 60)),
        lambda db: ["+ [safe] widen column customer.wechat VARCHAR(20) → VARCHAR(60)"],
        before=_with("wechat", 20, ["abcdefghij", None, "x"]),
        after=_after_values("wechat", ["abcdefghij", None, "x"], "VARCHAR(60)")),
    "narrow": Case(
        add(string_field("wechat", 10)),
        lambda db: ["! [destructive] narrow column customer.wechat VARCHAR(40) → VARCHAR(10) — 2 row(s) have a "
                    "value longer than 10 characters and would be cut"],
        before=_with("wechat", 40, ["x" * 30, "y" * 12, "short"]),
        after=_after_values("wechat", ["x" * 10, "y" * 10, "short"], "VARCHAR(10)"),
        destructive=1),
    "rename_column": Case(
        lambda o: o.without_field("customer", "wechat").with_field(string_field("weixin", renamed_from="wechat")),
        lambda db: ["+ [safe] rename column customer.wechat → weixin (data kept)"],
        before=_with("wechat", 40, ["wx-1", None, "wx-3"]),
        after=_after_rename),
    "drop_column": Case(
        lambda o: o.without_field("customer", "wechat"),
        lambda db: ["! [destructive] drop column customer.wechat — 2 row(s) have a value in wechat"],
        before=_with("wechat", 40, ["wx-1", None, "wx-3"]),
        after=_after_gone(column="wechat"),
        destructive=1),
    "drop_table": Case(
        lambda o: o.without_entity("gadget"),
        lambda db: ["! [destructive] drop table gadget — 2 row(s) would be deleted"],
        before=_gadget_before,
        after=_after_gone(table="gadget"),
        destructive=1),
    "type_change": Case(
        add(CODE("integer")),
        lambda db: ["! [destructive] change type of customer.code VARCHAR(20) → INTEGER — every existing value "
                    "converts; formatting of the old values is not kept"],
        before=_with("code", 20, ["42", "7", "-3"]),
        after=_after_integers,
        destructive=1),
    "type_change_unconvertible": Case(
        add(CODE("integer")),
        lambda db: [f"x [destructive] change type of customer.code VARCHAR(20) → INTEGER — BLOCKED: 2 row(s) have a "
                    f"value of code that is not a valid whole number (e.g. id {db.ids[1]}: 'n/a', id {db.ids[2]}: "
                    "'12abc'); correct or clear them first"],
        before=_with("code", 20, ["42", "n/a", "12abc"]),
        destructive=1, blocked=1),
    "required_without_default": Case(
        add(string_field("tier", 20, required=True)),
        lambda db: ["x [safe] add column customer.tier VARCHAR(20) — BLOCKED: customer has 3 row(s) and the required "
                    "field tier has no default: give it a default or make it optional"],
        blocked=1),
    "required_with_default": Case(
        add(string_field("tier", 20, required=True, default="std")),
        lambda db: ["+ [safe] add column customer.tier VARCHAR(20) (existing rows get 'std')"],
        after=_after_required_default),
    "unique_on_duplicates": Case(
        add(string_field("wechat", unique=True)),
        lambda db: ["x [safe] add unique constraint uq_customer_wechat on customer — BLOCKED: 1 value(s) of "
                    "customer.wechat appear more than once; a unique constraint cannot be built until they differ"],
        before=_with("wechat", 40, ["dup", "dup", "other"]),
        blocked=1),
    "unique": Case(
        add(string_field("wechat", unique=True)),
        lambda db: ["+ [safe] add unique constraint uq_customer_wechat on customer"],
        before=_with("wechat", 40, ["one", "two", None]),
        after=lambda db: _assert_unique_enforced(db, "wechat")),
}


def _assert_index(db: Db, name: str, columns: tuple) -> None:
    assert db.indexes().get(name) == (columns, False)


def _assert_unique_enforced(db: Db, column: str) -> None:
    with pytest.raises(Exception, match="(?i)unique"):
        db.set_values(column, ["same", "same"])
    assert db.values(column) == ["one", "two", None]


def _but_overlay(state: dict) -> dict:
    data = {t: rows for t, rows in state["data"].items() if t != "crm_schema_overlay"}
    return {**{k: v for k, v in state.items() if k != "overlay"}, "data": data}


@pytest.mark.parametrize("kind", list(CASES))
def test_plan_and_apply_each_kind_of_change(db, kind):
    case = CASES[kind]
    if case.before:
        case.before(db)
    expected = case.lines(db)
    header = (f"{len(expected)} change(s) on {db.backend}, {case.destructive} destructive, "
              f"{case.blocked} blocked:")

    # What the schema screen shows (the service's plan) ...
    plan = db.service.plan(case.change).plan
    report = plan.report()
    assert report.splitlines()[0] == header, report
    assert plan_lines(report) == expected, report
    assert not plan.warnings and not plan.limits

    before = db.state()
    if case.blocked:  # ... nothing is applied, not even when data loss is allowed
        with pytest.raises(MigrationError, match="the change cannot be applied; nothing was changed") as exc:
            db.service.apply(case.change, allow_destructive=True)
        assert expected[0].split("BLOCKED: ")[1] in str(exc.value)
        assert db.state() == before and not db.backup_files()

    # ... and what `crm schema plan` prints for the same dictionary (overlay stored, not applied yet).
    db.stash(case.change(before["overlay"]))
    result = db.cli("plan")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [header, *(f"  {line}" for line in expected),
                                          "Apply with: flask --app app crm schema apply"
                                          + (" --allow-destructive" if case.destructive else "")]

    result = db.cli("apply", *(["--allow-destructive"] if case.destructive else []))
    if case.blocked:
        assert result.exit_code == 1, result.output
        assert "the change cannot be applied; nothing was changed" in result.output
        assert _but_overlay(db.state()) == _but_overlay(before)  # (the stashed overlay is the only change)
        return
    assert result.exit_code == 0, result.output
    assert ("backup: " in result.output) == bool(case.destructive)
    assert f"applied; schema generation {before['generation'] + 1}" in result.output
    case.after(db)
    assert db.service.drift() == []  # the tables match the stored snapshot and the dictionary


def test_cli_plan_of_several_changes_and_apply_refusals(db):
    """Like the example of docs/schema-reference.md: a rename, a narrowing and a blocked type change at once."""
    db.service.apply(add(string_field("wechat"), string_field("note"), string_field("score", 20)), tables={"customer"})
    db.set_values("wechat", ["wx-1", None, "wx-3"])
    db.set_values("note", ["short", "a much longer value than twenty", None])
    db.set_values("score", ["12", "n/a", "7"])
    change = (lambda o: o.without_field("customer", "wechat")
              .with_field(string_field("weixin", 40, renamed_from="wechat"))
              .with_field(string_field("note", 20))
              .with_field(CustomField("customer", "score", field_spec("integer", "评分", "Score"))))
    before = db.state()
    db.stash(change(before["overlay"]))
    result = db.cli("plan")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "3 change(s) on %s, 2 destructive, 1 blocked:" % db.backend,
        "  + [safe] rename column customer.wechat → weixin (data kept)",
        "  ! [destructive] narrow column customer.note VARCHAR(40) → VARCHAR(20) — 1 row(s) have a value longer "
        "than 20 characters and would be cut",
        "  x [destructive] change type of customer.score VARCHAR(20) → INTEGER — BLOCKED: 1 row(s) have a value of "
        f"score that is not a valid whole number (e.g. id {db.ids[1]}: 'n/a'); correct or clear them first",
        "Apply with: flask --app app crm schema apply --allow-destructive"]
    as_json = json.loads(db.cli("plan", "--json").output)
    assert (as_json["dialect"], as_json["destructive"], as_json["blocked"]) == (db.backend, 2, 1)
    assert [c["safe"] for c in as_json["changes"]] == [True, False, False]
    assert as_json["changes"][2]["blocked"].startswith("1 row(s) have a value of score")
    result = db.cli("apply", "--allow-destructive")  # blocked: not even with data loss allowed
    assert result.exit_code == 1 and "the change cannot be applied; nothing was changed" in result.output
    assert "change type of customer.score VARCHAR(20) → INTEGER: 1 row(s)" in result.output
    assert _but_overlay(db.state()) == _but_overlay(before) and not db.backup_files()

    db.set_values("score", ["12", None, "7"])  # the admin clears the bad value: now only destructive
    result = db.cli("apply")
    assert result.exit_code == 1 and "could lose data; nothing was changed" in result.output
    assert "narrow column customer.note VARCHAR(40) → VARCHAR(20) (1 row(s) have a value longer" in result.output
    result = db.cli("apply", "--allow-destructive")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"backup: {db.instance / 'backups'}")
    assert db.values("weixin") == ["wx-1", None, "wx-3"] and db.values("score") == [12, None, 7]
    assert db.values("note") == ["short", "a much longer value ", None]
    assert db.cli("drift").exit_code == 0


def test_renamed_from_is_one_step_not_a_drop_and_an_add(db):
    _with("wechat", 40, ["wx-1", None, "wx-3"])(db)
    plain = db.service.plan(lambda o: o.without_field("customer", "wechat").with_field(string_field("weixin"))).plan
    assert [c.kind for c in plain.changes] == ["add_column", "drop_column"] and len(plain.destructive) == 1
    outcome = db.service.apply(CASES["rename_column"].change, tables={"customer"})
    assert [c.kind for c in outcome.plan.changes] == ["rename_column"] and not outcome.backup
    _after_rename(db)


def test_budget_warning_for_an_entity_with_very_many_columns(db):
    # 80 % of the columns a table may have: 1,600 of SQLite's 2,000, 1,280 of PostgreSQL's 1,600 (booleans: a
    # PostgreSQL row of them stays small).
    n = 1600 if db.backend == "sqlite" else 1280
    change = wide_entity("wide", {f"flag{i:04d}": {"type": "boolean", "label": f"F{i}"} for i in range(n)})
    plan = db.service.apply(change, tables={"wide"}).plan  # a warning does not stop the change
    assert len(db.columns("wide")) == n + 6
    limit = 2000 if db.backend == "sqlite" else 1600
    assert plan.warnings == [f"wide has {n + 6} of the {limit} columns {db.backend} allows per table"]
    assert plan.report().splitlines()[-1] == f"  warning: wide has {n + 6} of the {limit} columns {db.backend} " \
                                             "allows per table"
    assert not plan.limits and not plan.blocked


def test_row_size_budget(db):
    """PostgreSQL rows must fit in a heap page (8,160 bytes): a limit, and a warning at 80 %."""
    from crm_meta.db.plan import PG_MAX_ROW

    # Short strings are kept in the row (4 bytes per character at worst): 500 of 16 characters cannot fit.
    change = wide_entity("wide", {f"s{i:03d}": {"type": "string", "length": 16, "label": f"S{i}"} for i in range(500)})
    plan = db.service.plan(change, tables={"wide"}).plan
    before = db.state()
    if db.backend == "sqlite":  # no such limit there
        assert not plan.limits and not plan.warnings
        return
    assert len(plan.limits) == 1
    assert re.fullmatch(rf"a full row of wide would need at least \d+ bytes; PostgreSQL rows cannot exceed "
                        rf"{PG_MAX_ROW} bytes", plan.limits[0])
    assert f"  LIMIT: {plan.limits[0]}" in plan.report().splitlines()
    with pytest.raises(MigrationError, match="exceeds what the database allows; nothing was changed"):
        db.service.apply(change, tables={"wide"})
    assert db.state() == before
    # 100 of them fit, close to the limit: a warning.
    near = wide_entity("wide", {f"s{i:03d}": {"type": "string", "length": 16, "label": f"S{i}"} for i in range(100)})
    plan = db.service.plan(near, tables={"wide"}).plan
    assert not plan.limits
    assert len(plan.warnings) == 1 and re.fullmatch(
        rf"a full row of wide needs at least \d+ of the {PG_MAX_ROW} bytes PostgreSQL allows per row", plan.warnings[0])


# ------------------------------------------------------------------------------------------------
# 2. Destructive steps: refused unless allowed, and then a backup first
# ------------------------------------------------------------------------------------------------

def test_destructive_change_is_refused_then_applied_after_a_backup(db, monkeypatch):
    _with("wechat", 40, ["wx-1", None, "wx-3"])(db)
    drop = lambda o: o.without_field("customer", "wechat")  # noqa: E731
    before = db.state()
    with pytest.raises(MigrationError) as exc:
        db.service.apply(drop, tables={"customer"})
    assert str(exc.value).splitlines()[:2] == [
        "the data dictionary needs changes that could lose data; nothing was changed:",
        "  drop column customer.wechat (2 row(s) have a value in wechat)"]
    assert "--allow-destructive" in str(exc.value)
    assert db.state() == before and not db.backup_files()

    if db.backend == "postgresql":  # pg_dump not on PATH: found beside the server binaries
        monkeypatch.setattr(sc_mod.shutil, "which", lambda name, *a, **k: None)
    outcome = db.service.apply(drop, tables={"customer"}, allow_destructive=True)
    assert "wechat" not in db.columns()
    assert outcome.backup is not None and outcome.backup.parent == db.backups and db.backup_files() == [outcome.backup]
    if db.backend == "sqlite":
        assert outcome.backup.suffix == ".db"
        with sqlite3.connect(outcome.backup) as conn:  # the copy opens and has the rows, with the dropped column
            assert conn.execute("SELECT wechat FROM customer ORDER BY id").fetchall() == [("wx-1",), (None,), ("wx-3",)]
        return
    assert outcome.backup.suffix == ".dump" and outcome.backup.read_bytes()[:5] == b"PGDMP"
    pg_restore = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_restore"))[-1:] or [shutil.which("pg_restore")]
    listing = subprocess.run([str(pg_restore[0]), "--list", str(outcome.backup)], capture_output=True, text=True,
                             check=True).stdout
    assert "TABLE DATA public customer" in listing
    script = subprocess.run([str(pg_restore[0]), "--data-only", "--table=customer", "-f", "-", str(outcome.backup)],
                            capture_output=True, text=True, check=True).stdout
    assert "wx-1" in script and "wx-3" in script


# ------------------------------------------------------------------------------------------------
# 3. A failure half way leaves everything as it was
# ------------------------------------------------------------------------------------------------

INDEXED = add(string_field("f1", indexed=True))  # two steps: add column, then add index


def _assert_untouched(db: Db, before: dict) -> None:
    assert db.state() == before
    assert "f1" not in db.columns()
    drift = db.cli("drift")
    assert drift.exit_code == 0, drift.output


def test_injected_failure_after_the_first_step_changes_nothing(db):
    _with("wechat", 40, ["a", None, "c"])(db)
    assert len(db.service.plan(INDEXED, tables={"customer"}).plan.changes) == 2
    before = db.state()
    with pytest.raises(MigrationError, match=r"injected failure before step 2: add index ix_customer_f1"):
        db.service.apply(INDEXED, tables={"customer"}, fail_after=1)
    _assert_untouched(db, before)


def test_database_failure_in_the_second_step_changes_nothing(db, monkeypatch):
    from crm_meta.db import apply as apply_mod

    real, calls = apply_mod._step, []

    def second_step_fails(connection, operations, change):
        calls.append(change.text)
        if len(calls) == 2:
            connection.exec_driver_sql("CREATE INDEX ix_broken ON customer (no_such_column)")
        real(connection, operations, change)

    monkeypatch.setattr(apply_mod, "_step", second_step_fails)
    before = db.state()
    with pytest.raises(MigrationError, match=r"the database refused 'add index ix_customer_f1 .*no_such_column"):
        db.service.apply(INDEXED, tables={"customer"})
    assert calls == ["add column customer.f1 VARCHAR(40)",
                     "add index ix_customer_f1 on customer (customer.f1)"]  # the first step did run
    _assert_untouched(db, before)


def test_failure_after_the_steps_rolls_back_the_tables_too(db, monkeypatch):
    """The overlay, the snapshot and the generation commit with the DDL: a failure at the very end undoes all."""
    def broken(conn):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sc_mod, "bump_generation", broken)
    before = db.state()
    with pytest.raises(RuntimeError, match="disk full"):
        db.service.apply(INDEXED, tables={"customer"})
    _assert_untouched(db, before)


# ------------------------------------------------------------------------------------------------
# 4. Drift
# ------------------------------------------------------------------------------------------------

def test_drift_finds_a_column_added_by_hand(db):
    fresh_drift = db.cli("drift")
    assert fresh_drift.exit_code == 0, fresh_drift.output
    assert "no drift" in fresh_drift.output

    db.execute("ALTER TABLE customer ADD COLUMN x VARCHAR(10)")
    result = db.cli("drift")
    assert result.exit_code == 1
    assert "column customer.x is in the database but not in the snapshot" in result.output.splitlines()
    assert "pending: drop column customer.x" in result.output

    db.execute("ALTER TABLE customer DROP COLUMN x")
    result = db.cli("drift")
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------------------------
# 5. Export and import
# ------------------------------------------------------------------------------------------------

def _admin_items(db: Db) -> list[tuple]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT dictionary, code, label_zh, label_en, sort_order, active FROM crm_dict_item "
            "WHERE origin = 'admin' ORDER BY dictionary, code"))]


def test_export_then_import_into_a_fresh_database(fresh, tmp_path):
    source, files = fresh(), _schema_files()
    wechat = CustomField("customer", "wechat", field_spec("string", "微信", "WeChat", length=32),
                         list=True, search=True)
    vip = CustomField("customer", "vip", field_spec("boolean", "贵宾", "VIP"), filters=True)
    source.service.apply(lambda o: add(wechat, vip)(o.with_entity(GADGET)))
    # what the data dictionary screen does: a new item and an edited one, both origin 'admin'
    source.execute("INSERT INTO crm_dict_item (dictionary, code, label_zh, label_en, sort_order, active, attrs, origin) "
                   "VALUES ('industry', 'aerospace', '航空航天', 'Aerospace', 95, :t, :a, 'admin')",
                   t=True, a=json.dumps({}))
    source.execute("UPDATE crm_dict_item SET label_en = 'Retail trade', origin = 'admin' "
                   "WHERE dictionary = 'industry' AND code = 'retail'")
    items = _admin_items(source)
    assert len(items) == 2

    out = tmp_path / "exported"
    result = source.cli("export", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["custom_entities.yaml", "custom_fields.yaml",
                                                      "dictionary_items.yaml"]
    fields = yaml.safe_load((out / "custom_fields.yaml").read_text(encoding="utf-8"))
    assert fields["extend"]["customer"]["fields"]["wechat"] == {"type": "string", "label": {"zh": "微信", "en": "WeChat"},
                                                                "length": 32}
    assert fields["extend"]["customer"]["list"] == ["wechat"] and fields["extend"]["customer"]["filters"] == ["vip"]
    entities = yaml.safe_load((out / "custom_entities.yaml").read_text(encoding="utf-8"))
    assert entities["entities"]["gadget"] == GADGET.spec
    dict_doc = yaml.safe_load((out / "dictionary_items.yaml").read_text(encoding="utf-8"))
    assert {i["code"] for i in dict_doc["dictionary_items"]["industry"]} == {"aerospace", "retail"}

    target = fresh()
    # An invalid file: named with line and column, exit 1, nothing changed.
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    text_ = (bad / "custom_fields.yaml").read_text(encoding="utf-8")
    (bad / "custom_fields.yaml").write_text(text_.replace("type: boolean", "type: bool"), encoding="utf-8")
    line = next(n for n, s in enumerate(text_.splitlines(), 1) if "type: boolean" in s)
    before = target.state()
    result = target.cli("import", str(bad))
    assert result.exit_code == 1
    assert re.search(rf"^{re.escape(str(bad / 'custom_fields.yaml'))}:{line}:\d+: .*'bool'", result.output, re.M), \
        result.output
    assert "nothing was changed" in result.output
    assert target.state() == before

    result = target.cli("import", str(out))
    assert result.exit_code == 0, result.output
    assert "imported 2 custom field(s), 1 entit(ies)" in result.output
    assert target.service.overlay() == source.service.overlay()
    for table in ("customer", "gadget"):
        assert target.columns(table) == source.columns(table)
    assert _admin_items(target) == items
    assert target.cli("drift").exit_code == 0
    assert _schema_files() == files


def test_import_refuses_keys_an_overlay_does_not_hold(db, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "custom_fields.yaml").write_text("version: 1\nmenus:\n  x: {label: X}\n", encoding="utf-8")
    before = db.state()
    result = db.cli("import", str(bad))
    assert result.exit_code == 1
    assert re.search(rf"^{re.escape(str(bad / 'custom_fields.yaml'))}:2:1: .*menus", result.output, re.M), \
        result.output
    assert db.state() == before


# ------------------------------------------------------------------------------------------------
# 6. Start-up serves the overlay; the YAML files are never edited
# ------------------------------------------------------------------------------------------------

def test_startup_serves_a_custom_field_from_the_overlay(db):
    from app import create_app

    files = _schema_files()
    db.service.apply(add(CustomField("customer", "wechat", field_spec("string", "微信号", "WeChat ID", length=32),
                                     list=True)), tables={"customer"})
    app = create_app({**{k: db.template.config[k] for k in ("SECRET_KEY", "CRM_ADMIN_PASSWORD")},
                      "SQLALCHEMY_DATABASE_URI": db.url, "INSTANCE_PATH": str(db.instance), "TESTING": True})
    try:
        client = login(app.test_client())
        form = client.get("/customer/add")
        assert form.status_code == 200 and 'name="wechat"' in form.get_data(as_text=True)
        api = app.test_client()  # (no session cookie: REST with a bearer token)
        token = api.post("/api/v1/security/login", json={"username": "admin", "password": ADMIN_PASSWORD,
                                                         "provider": "db"}).json["access_token"]
        info = api.get("/api/v1/customer/_info", headers={"Authorization": f"Bearer {token}"})
        assert {"name": "wechat", "label": "微信号", "type": "string", "required": False, "readonly": False,
                "max_length": 32} in info.json["fields"]
        # a change applied while the app runs is served from the next request on
        db.service.apply(add(string_field("qq", 20)), tables={"customer"})
        assert 'name="qq"' in client.get("/customer/add").get_data(as_text=True)
    finally:
        with app.app_context():
            app.extensions["crm"].db.engine.dispose()
    assert _schema_files() == files
