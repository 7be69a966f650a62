"""Plan and apply changes of the data dictionary (``schemas/`` + the admins' overlay) on a live database.

One implementation for the CLI (``crm schema plan/apply/drift/export/import``), the schema screens and
their REST API. An apply takes the database's write lock (PostgreSQL advisory lock; SQLite
``BEGIN IMMEDIATE``) and, in ONE transaction, changes the tables, stores the overlay, the reflected
snapshot of the tables and the dictionary digest, and bumps the schema generation that every worker
process checks on its next request (crm_meta.web.live). A failure anywhere rolls all of it back.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sqlalchemy import MetaData, create_engine, delete, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from crm_meta.db.system import define_system_tables
from crm_meta.errors import MigrationError, SchemaErrors
from crm_meta.schema.overlay import Overlay

if TYPE_CHECKING:  # Alembic (under crm_meta.db.plan) is imported only when a plan is made, not at start-up
    from crm_meta.db.plan import Plan

_SYSTEM = define_system_tables(MetaData())
OVERLAY = _SYSTEM["overlay"]
STATE = _SYSTEM["state"]
GENERATION_KEY = "schema_generation"
SNAPSHOT_KEY = "schema_snapshot"
DIGEST_KEY = "schema_digest"
LOCK_ID = 7262010  # the same advisory lock start-up migration takes


# --- state ------------------------------------------------------------------------------------------

def get_state(conn: Connection, key: str) -> str | None:
    return conn.execute(select(STATE.c.value).where(STATE.c.key == key)).scalar()


def set_state(conn: Connection, key: str, value: str) -> None:
    if conn.execute(select(STATE.c.key).where(STATE.c.key == key)).first():
        conn.execute(STATE.update().where(STATE.c.key == key).values(value=value))
    else:
        conn.execute(STATE.insert().values(key=key, value=value))


def generation(conn: Connection) -> int:
    try:
        return int(get_state(conn, GENERATION_KEY) or 0)
    except Exception:  # no state table yet
        return 0


def bump_generation(conn: Connection) -> int:
    value = generation(conn) + 1
    set_state(conn, GENERATION_KEY, str(value))
    return value


# --- the overlay --------------------------------------------------------------------------------------

def read_overlay(conn: Connection) -> Overlay:
    if not conn.dialect.has_table(conn, OVERLAY.name):
        return Overlay()
    return Overlay.from_rows(conn.execute(select(OVERLAY)).mappings())


def write_overlay(conn: Connection, overlay: Overlay, user_id: int | None = None) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    old = {(r["kind"], r["entity"], r["name"]): r for r in conn.execute(select(OVERLAY)).mappings()}
    new = {(r["kind"], r["entity"], r["name"]): r for r in overlay.rows()}
    for key in old.keys() - new.keys():
        conn.execute(delete(OVERLAY).where(OVERLAY.c.kind == key[0], OVERLAY.c.entity == key[1],
                                           OVERLAY.c.name == key[2]))
    for key, row in new.items():
        before = old.get(key)
        if before is None:
            conn.execute(OVERLAY.insert().values(**row, updated_at=now, updated_by=user_id))
        elif any(before[k] != row[k] for k in ("spec", "placement", "position")):
            conn.execute(OVERLAY.update().where(OVERLAY.c.kind == key[0], OVERLAY.c.entity == key[1],
                                                OVERLAY.c.name == key[2])
                         .values(spec=row["spec"], placement=row["placement"], position=row["position"],
                                 updated_at=now, updated_by=user_id))


def startup_overlay(uri: str, options: dict | None = None) -> Overlay:
    """The stored overlay, read before the app is built (an empty one on a new database)."""
    opts = {k: v for k, v in (options or {}).items() if k == "connect_args"}
    engine = create_engine(uri, poolclass=NullPool, **opts)
    try:
        with engine.connect() as conn:
            return read_overlay(conn)
    finally:
        engine.dispose()


# --- snapshot and drift ---------------------------------------------------------------------------------

def snapshot(conn: Connection, tables: set[str]) -> dict:
    """The tables as the database has them: columns (type, nullable), indexes and unique constraints."""
    insp = inspect(conn)
    present = set(insp.get_table_names()) & set(tables)
    out: dict[str, dict] = {}
    if not present:
        return out
    names = sorted(present)
    columns = insp.get_multi_columns(filter_names=names)
    indexes = insp.get_multi_indexes(filter_names=names)
    uniques = insp.get_multi_unique_constraints(filter_names=names)
    for (_, tname), cols in columns.items():
        out[tname] = {
            "columns": {c["name"]: {"type": _type_text(conn, c["type"]), "nullable": bool(c["nullable"])}
                        for c in cols},
            "indexes": {i["name"]: {"columns": list(i["column_names"]), "unique": bool(i["unique"])}
                        for i in indexes.get((None, tname), ()) if i.get("name")},
            "unique": sorted(",".join(u["column_names"]) for u in uniques.get((None, tname), ())),
        }
    return out


def _type_text(conn: Connection, type_) -> str:
    try:
        return " ".join(type_.compile(dialect=conn.dialect).upper().split())
    except Exception:
        return str(type_).upper()


def store_snapshot(conn: Connection, tables: set[str]) -> dict:
    snap = snapshot(conn, tables)
    set_state(conn, SNAPSHOT_KEY, json.dumps(snap, sort_keys=True))
    return snap


def diff_snapshots(stored: dict, live: dict) -> list[str]:
    out = []
    for t in sorted(stored.keys() | live.keys()):
        if t not in live:
            out.append(f"table {t} is in the snapshot but not in the database")
            continue
        if t not in stored:
            out.append(f"table {t} is in the database but not in the snapshot")
            continue
        a, b = stored[t], live[t]
        for c in sorted(a["columns"].keys() | b["columns"].keys()):
            if c not in b["columns"]:
                out.append(f"column {t}.{c} is in the snapshot but not in the database")
            elif c not in a["columns"]:
                out.append(f"column {t}.{c} is in the database but not in the snapshot")
            elif a["columns"][c] != b["columns"][c]:
                out.append(f"column {t}.{c}: snapshot {a['columns'][c]}, database {b['columns'][c]}")
        for i in sorted(a["indexes"].keys() | b["indexes"].keys()):
            if a["indexes"].get(i) != b["indexes"].get(i):
                out.append(f"index {i} on {t}: snapshot {a['indexes'].get(i)}, database {b['indexes'].get(i)}")
        if a["unique"] != b["unique"]:
            out.append(f"unique constraints of {t}: snapshot {a['unique']}, database {b['unique']}")
    return out


# --- backups ----------------------------------------------------------------------------------------------

def backup(engine: Engine, directory: Path, tables: list[str]) -> Path:
    """A copy of the database taken before a destructive change; returns where it went."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    if engine.dialect.name == "sqlite":
        target = directory / f"crm-{stamp}.db"
        src = sqlite3.connect(engine.url.database)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return target
    target = directory / f"crm-{stamp}.dump"
    pg_dump = shutil.which("pg_dump") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
                                                          reverse=True)), None)
    if pg_dump is None:
        raise MigrationError("a destructive change needs a backup first, and pg_dump was not found; install the "
                             "PostgreSQL client tools or take a backup yourself and retry")
    url = engine.url.set(drivername="postgresql")
    args = [str(pg_dump), "--format=custom", f"--file={target}"]
    args += [f"--table={t}" for t in tables]
    args.append(url.render_as_string(hide_password=False))
    result = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise MigrationError(f"the backup before the destructive change failed: {result.stderr.strip()[:300]}")
    return target


# --- plan / apply -------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    plan: Plan
    overlay: Overlay
    registry: object
    generation: int = 0
    backup: Path | None = None
    applied: bool = False
    messages: list[str] = field(default_factory=list)


class SchemaChanges:
    """The data dictionary of one database: YAML under ``base_paths`` plus the stored overlay."""

    def __init__(self, engine: Engine, base_paths: list, user_model, backup_dir: Path | None = None,
                 field_types=None):
        self.engine = engine
        self.base_paths = list(base_paths)
        self.user_model = user_model
        self.backup_dir = backup_dir
        self.field_types = field_types  # the app's (Plugins.field_types()); None: the built-in types only

    @classmethod
    def for_config(cls, engine: Engine, config, plugins, instance_path, user_model) -> "SchemaChanges":
        """The service as an app configured with ``config`` and ``plugins`` sees its dictionary: YAML under
        CRM_SCHEMA_PATH plus the plugins' files and field types; backups under ``<instance>/backups``."""
        from crm_meta.settings import schema_paths

        paths = schema_paths(config) + [str(p) for p in plugins.schema_paths()]
        return cls(engine, paths, user_model, Path(instance_path) / "backups", field_types=plugins.field_types())

    # registry and tables for an overlay
    def registry(self, overlay: Overlay):
        """Load YAML + ``overlay`` through the same checks as start-up (raises SchemaErrors)."""
        from crm_meta.schema import load_registry

        return load_registry(self.base_paths, overlay, self.field_types)

    def models(self, registry):
        from crm_meta.db.tables import build_models

        return build_models(registry, self.user_model)

    def overlay(self) -> Overlay:
        with self.engine.connect() as conn:
            return read_overlay(conn)

    def plan(self, change: Callable[[Overlay], Overlay] | None = None, *, tables: set[str] | None = None) -> Outcome:
        """What applying ``change`` (or the current dictionary, when None) would do; nothing is changed."""
        from crm_meta.db import migrate

        with self.engine.connect() as conn:
            overlay = read_overlay(conn)
            overlay = change(overlay) if change else overlay
            registry = self.registry(overlay)
            models = self.models(registry)
            plan = migrate.plan(conn, models.metadata, registry, tables=tables)
            conn.rollback()
        return Outcome(plan, overlay, registry)

    def apply(self, change: Callable[[Overlay], Overlay] | None = None, *, allow_destructive: bool = False,
              user_id: int | None = None, tables: set[str] | None = None, fail_after: int | None = None,
              expect: Plan | None = None, also: Callable | None = None) -> Outcome:
        """Apply ``change`` to the overlay (or just the current dictionary) and the tables, all or nothing.

        ``tables`` limits the comparison to those tables (a custom-field change touches one table).
        ``expect``: the plan the admin confirmed; if the plan differs now, nothing is applied.
        """
        from crm_meta.db import migrate
        from crm_meta.db.apply import execute

        backup_path = None
        if allow_destructive:  # the backup is taken before the write lock, from a consistent copy
            preview = self.plan(change, tables=tables)
            if preview.plan.destructive and not preview.plan.blocked:
                backup_path = backup(self.engine, self.backup_dir or Path("instance/backups"),
                                     sorted({c.table for c in preview.plan.changes}))
        with self.engine.connect() as conn:
            write_lock(conn)
            try:
                overlay = read_overlay(conn)
                overlay = change(overlay) if change else overlay
                registry = self.registry(overlay)
                models = self.models(registry)
                plan = migrate.plan(conn, models.metadata, registry, tables=tables)
                if expect is not None and [c.text for c in expect.changes] != [c.text for c in plan.changes]:
                    raise MigrationError("the schema changed since the plan was shown; review the new plan")
                execute(conn, models.metadata, plan, allow_destructive=allow_destructive, fail_after=fail_after)
                if change is not None:
                    write_overlay(conn, overlay, user_id)
                gen = record_applied(conn, models)
                if also is not None:  # more writes that must commit with the change (e.g. imported items)
                    also(conn, registry, models)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return Outcome(plan, overlay, registry, gen, backup_path, True)

    def import_directory(self, directory, *, allow_destructive: bool = False, user_id: int | None = None) -> Outcome:
        """Replace the overlay with an exported directory's YAML (and its dictionary items) and apply it."""
        from crm_meta.errors import SchemaIssue, SourceLocation
        from crm_meta.schema import load_files, validate_files
        from crm_meta.schema.overlay import read_directory

        imported = read_directory(directory)
        issues = list(imported.issues)
        for f in imported.files:
            for key in (f.data or {}):
                if key not in ("version", "entities", "extend"):
                    issues.append(SchemaIssue(f.locate((key,), key=True), key,
                                              f"an overlay holds only entities:, extend: and dictionary_items:, "
                                              f"not {key}:"))
        base, more = load_files(self.base_paths)
        issues += more
        if not issues:
            issues += validate_files(base + imported.files, self.field_types)
        if not issues:
            registry = self.registry(imported.overlay)
            for name in imported.dictionary_items:
                if not registry.has_dictionary(name):
                    issues.append(SchemaIssue(SourceLocation(str(directory), 1, 1), f"dictionary_items.{name}",
                                              f"unknown dictionary '{name}'"))
        if issues:
            raise SchemaErrors(issues)

        def items(conn, registry, models):
            upsert_admin_items(conn, models.system["dict_item"], imported.dictionary_items)

        return self.apply(lambda _old: imported.overlay, allow_destructive=allow_destructive, user_id=user_id,
                          also=items)

    def drift(self) -> list[str]:
        """Differences between the stored snapshot and the live tables, then pending dictionary changes."""
        with self.engine.connect() as conn:
            stored = get_state(conn, SNAPSHOT_KEY) if conn.dialect.has_table(conn, STATE.name) else None
            overlay = read_overlay(conn)
            registry = self.registry(overlay)
            models = self.models(registry)
            if stored is None:
                return ["no schema snapshot is stored yet: start the app or run `crm schema apply` once"]
            stored_snap = json.loads(stored)
            live = snapshot(conn, set(stored_snap) | set(models.metadata.tables))
            out = diff_snapshots(stored_snap, live)
            from crm_meta.db import migrate

            pending = migrate.plan(conn, models.metadata, registry)
            out += [f"pending: {c.text}" for c in pending.changes]
            conn.rollback()
        return out


def dictionary_items_text(conn: Connection) -> dict[str, str]:
    """The dictionary items admins added or edited (origin 'admin') as an exportable YAML file."""
    import yaml

    table = _SYSTEM["dict_item"]
    rows = conn.execute(select(table).where(table.c.origin == "admin")
                        .order_by(table.c.dictionary, table.c.sort_order, table.c.code)).mappings().all()
    if not rows:
        return {}
    doc: dict[str, list] = {}
    for r in rows:
        item = {"code": r["code"], "label": {"zh": r["label_zh"], "en": r["label_en"]}, "order": r["sort_order"],
                "active": bool(r["active"])}
        if r["grp"]:
            item["group"] = r["grp"]
        if r["attrs"]:
            item["attrs"] = dict(r["attrs"])
        doc.setdefault(r["dictionary"], []).append(item)
    header = "# Dictionary items admins added or edited on the data dictionary screen.\n"
    return {"dictionary_items.yaml": header + yaml.safe_dump({"dictionary_items": doc}, allow_unicode=True,
                                                              sort_keys=False)}


def upsert_admin_items(conn: Connection, table, items: dict[str, list[dict]]) -> int:
    n = 0
    for dictionary, lst in items.items():
        for i, item in enumerate(lst):
            label = item.get("label") or {}
            if isinstance(label, str):
                label = {"zh": label, "en": label}
            row = {"label_zh": str(label.get("zh") or item["code"]), "label_en": str(label.get("en") or item["code"]),
                   "sort_order": int(item.get("order", i)), "active": bool(item.get("active", True)),
                   "grp": item.get("group"), "attrs": dict(item.get("attrs") or {}), "origin": "admin"}
            found = conn.execute(select(table.c.id).where(table.c.dictionary == dictionary,
                                                          table.c.code == str(item["code"]))).scalar()
            if found is None:
                conn.execute(table.insert().values(dictionary=dictionary, code=str(item["code"]), **row))
            else:
                conn.execute(table.update().where(table.c.id == found).values(**row))
            n += 1
    return n


def write_lock(conn: Connection) -> None:
    """The database's write lock for a schema change, held until the transaction ends (PostgreSQL
    advisory lock; SQLite BEGIN IMMEDIATE), so that workers starting at once migrate once."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_ID})")


def system_digest(models) -> str:
    """A short hash of the physical schema the code builds (tables, columns, indexes), so that a
    release changing what a declaration turns into (a new system table, a new index) migrates on
    the next start even though the dictionary itself did not change."""
    import hashlib

    h = hashlib.sha256()
    for table in sorted(models.metadata.tables.values(), key=lambda t: t.name):
        h.update(f"T{table.name}\x00".encode())
        for col in table.columns:
            h.update(f"{col.name}:{col.type!r}:{col.nullable}\x00".encode())
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            h.update(f"I{index.name}:{','.join(c.name for c in index.columns)}\x00".encode())
    return h.hexdigest()[:12]


def applied_digest(models) -> str:
    """What the stored ``schema_digest`` says once the tables match ``models``."""
    return f"{models.registry.digest}:{system_digest(models)}"


def record_applied(conn: Connection, models) -> int:
    """The tables now match ``models``: refresh the dictionary items, store the digest and the snapshot
    `crm schema drift` compares with, and bump the generation (running workers rebuild on their next
    request). Returns the new generation."""
    from crm_meta.services.dictionaries import sync_from_registry

    sync_from_registry(conn, models.system["dict_item"], models.registry)
    set_state(conn, DIGEST_KEY, applied_digest(models))
    store_snapshot(conn, set(models.metadata.tables))
    return bump_generation(conn)
