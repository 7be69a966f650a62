"""What it takes to bring the database to the built tables: each change described, classified as safe or
destructive, with what it would lose, what blocks it, and the budget of the database in use.

Alembic's autogenerate finds the differences; this module turns them into the steps an admin reads:
renames declared with ``renamed_from`` replace a drop + add, a longer string is a widening, a type change
says how many existing values would not convert.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from alembic.autogenerate import produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import ops
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    func,
    select,
    table as sql_table,
    column as sql_column,
)
from sqlalchemy.engine import Connection

# Per database: the most columns a table may have, and (PostgreSQL) the largest row a heap page holds.
MAX_COLUMNS = {"postgresql": 1600, "sqlite": 2000}
PG_MAX_ROW = 8160
PG_TOAST_POINTER = 18  # a long value moved out of the row still leaves this much behind
BUDGET_WARN = 0.8

# Steps run in this order so that e.g. SQLite can drop a column once its index is gone.
PHASES = ("drop_index", "drop_constraint", "rename_table", "rename_column", "add_table", "add_column",
          "widen", "type_change", "nullable", "drop_column", "drop_table", "add_index", "add_constraint",
          "other")


@dataclass
class Change:
    """One step of a plan.

    ``safe`` steps lose nothing; the others need ``--allow-destructive`` (and a backup is taken first).
    ``loss`` says what data a destructive step would lose; ``blocked`` says why a step cannot run at all
    (e.g. values that do not convert) — nothing is applied while any step is blocked.
    """

    kind: str
    table: str
    text: str
    safe: bool
    op: object = None
    loss: str = ""
    blocked: str = ""
    detail: dict = field(default_factory=dict)

    def __str__(self) -> str:
        mark = "x" if self.blocked else ("+" if self.safe else "!")
        tail = f" — BLOCKED: {self.blocked}" if self.blocked else (f" — {self.loss}" if self.loss else "")
        label = "safe" if self.safe else "destructive"
        return f"{mark} [{label}] {self.text}{tail}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "table": self.table, "text": self.text, "safe": self.safe,
                "loss": self.loss or None, "blocked": self.blocked or None}


@dataclass
class Plan:
    changes: list[Change]
    warnings: list[str]
    dialect: str
    limits: list[str] = field(default_factory=list)  # budgets exceeded: nothing may be applied

    @property
    def safe(self) -> bool:
        return all(c.safe for c in self.changes)

    @property
    def blocked(self) -> list[Change]:
        return [c for c in self.changes if c.blocked]

    @property
    def destructive(self) -> list[Change]:
        return [c for c in self.changes if not c.safe]

    def __bool__(self) -> bool:
        return bool(self.changes)

    def report(self) -> str:
        if not self.changes:
            lines = ["The database matches the data dictionary: nothing to change."]
        else:
            n_d = len(self.destructive)
            lines = [f"{len(self.changes)} change(s) on {self.dialect}, {n_d} destructive, "
                     f"{len(self.blocked)} blocked:"]
            lines += [f"  {c}" for c in self.changes]
        lines += [f"  LIMIT: {w}" for w in self.limits]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"dialect": self.dialect, "changes": [c.as_dict() for c in self.changes],
                "warnings": self.warnings, "limits": self.limits, "destructive": len(self.destructive), "blocked": len(self.blocked)}


def context(connection: Connection, metadata: MetaData, tables: set[str] | None = None) -> MigrationContext:
    """Compare ``metadata`` with the database, our tables only (``tables``: just these)."""
    ours = set(metadata.tables)

    def include_name(name, type_, parent_names):
        if type_ == "table":
            if tables is not None:
                return name in tables
            return name in ours or not name.startswith(("ab_", "alembic", "sqlite_"))
        return True

    def include_object(obj, name, type_, reflected, compare_to):
        if tables is None:
            return True
        owner = obj if type_ == "table" else getattr(obj, "table", None)
        return owner is None or owner.name in tables

    return MigrationContext.configure(connection, opts={
        "include_name": include_name,
        "include_object": include_object,
        "compare_type": True,
        "target_metadata": metadata,
    })


def _flatten(container) -> list:
    out = []
    for op in container.ops:
        if isinstance(op, (ops.ModifyTableOps, ops.UpgradeOps)):
            out += _flatten(op)
        else:
            out.append(op)
    return out


def _renames(metadata: MetaData, registry) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """(table, old column) → new column, and old table → new table, from ``renamed_from``."""
    columns: dict[tuple[str, str], str] = {}
    tables: dict[str, str] = {}
    if registry is None:
        return columns, tables
    for entity in registry.entities:
        if entity.renamed_from:
            tables[entity.renamed_from] = entity.table
        for f in entity.fields + entity.retired:
            if f.renamed_from and f.column:
                old = f"{f.renamed_from}_id" if f.is_fk else f.renamed_from
                columns[(entity.table, old)] = f.column
    return columns, tables


def build_plan(connection: Connection, metadata: MetaData, registry=None, *,
               tables: set[str] | None = None) -> Plan:
    """The plan for bringing the database to ``metadata`` (``registry`` supplies declared renames)."""
    script = produce_migrations(context(connection, metadata, tables), metadata)
    raw = _flatten(script.upgrade_ops)
    col_renames, table_renames = _renames(metadata, registry)
    changes: list[Change] = []
    dropped_tables = {op.table_name: op for op in raw if isinstance(op, ops.DropTableOp)}
    created_tables = {op.table_name: op for op in raw if isinstance(op, ops.CreateTableOp)}
    dropped_cols = {(op.table_name, op.column_name): op for op in raw if isinstance(op, ops.DropColumnOp)}
    added_cols = {(op.table_name, op.column.name): op for op in raw if isinstance(op, ops.AddColumnOp)}
    skip: set[int] = set()
    for old, new in table_renames.items():
        if old in dropped_tables and new in created_tables:
            skip |= {id(dropped_tables[old]), id(created_tables[new])}
            changes.append(Change("rename_table", old, f"rename table {old} → {new} (rows kept)", True,
                                  detail={"old": old, "new": new}))
    for (tname, old), new in col_renames.items():
        if (tname, old) in dropped_cols and (tname, new) in added_cols:
            skip |= {id(dropped_cols[(tname, old)]), id(added_cols[(tname, new)])}
            changes.append(Change("rename_column", tname, f"rename column {tname}.{old} → {new} (data kept)",
                                  True, detail={"old": old, "new": new}))
    if connection.dialect.name == "sqlite":  # a unique constraint added later is a unique index there (apply.py)
        uniques = {(op.table_name, op.constraint_name, tuple(op.columns)): op for op in raw
                   if isinstance(op, ops.CreateUniqueConstraintOp)}
        for op in raw:
            if isinstance(op, ops.DropIndexOp) and op._reverse is not None and op._reverse.unique:
                cols = tuple(getattr(c, "name", c) for c in op._reverse.columns)
                twin = uniques.get((op.table_name, op.index_name, cols))
                if twin is not None:
                    skip |= {id(op), id(twin)}
    renamed_away = set(table_renames)
    new = set(created_tables) | {f"{t}.{c}" for t, c in added_cols}  # no values yet: nothing can be duplicated
    for op in raw:
        if id(op) in skip:
            continue
        if getattr(op, "table_name", None) in renamed_away and isinstance(op, (ops.DropIndexOp,)):
            continue  # the old table's indexes go with the rename
        if getattr(op, "table_name", None) in dropped_tables and isinstance(op, ops.DropIndexOp):
            continue  # and a dropped table's with the table
        changes.append(_classify(connection, metadata, op, new))
    _fill_defaults(changes, registry)
    changes.sort(key=lambda c: PHASES.index(c.kind) if c.kind in PHASES else len(PHASES))
    warnings, limits = budgets(connection, metadata)
    return Plan(changes, warnings, connection.dialect.name, limits)


def _fill_defaults(changes: list[Change], registry) -> None:
    """A required field added to a table with rows is not blocked when it declares a fixed default:
    the existing rows get that value (apply.py adds the column with it)."""
    if registry is None:
        return
    fixed = {(e.table, f.column): f.default for e in registry.entities for f in e.fields
             if f.column and f.default is not None and not isinstance(f.default, (list, dict))
             and f.default not in ("current_user", "now", "today")}
    for change in changes:
        key = (change.table, getattr(change.op, "column", None) is not None and change.op.column.name)
        if change.kind == "add_column" and change.blocked and key in fixed:
            change.blocked = ""
            change.detail["fill"] = fixed[key]
            change.text += f" (existing rows get {fixed[key]!r})"


def _count(connection: Connection, tname: str, where=None) -> int:
    q = select(func.count()).select_from(sql_table(tname))
    if where is not None:
        q = q.where(where)
    return connection.execute(q).scalar() or 0


def _classify(connection: Connection, metadata: MetaData, op, new: set[str] = frozenset()) -> Change:
    if isinstance(op, ops.CreateTableOp):
        ncols = sum(1 for c in op.columns if hasattr(c, "primary_key"))
        return Change("add_table", op.table_name, f"add table {op.table_name} ({ncols} columns)", True, op)
    if isinstance(op, ops.DropTableOp):
        rows = _count(connection, op.table_name)
        return Change("drop_table", op.table_name, f"drop table {op.table_name}", False, op,
                      loss=f"{rows} row(s) would be deleted")
    if isinstance(op, ops.AddColumnOp):
        col = op.column
        text = f"add column {op.table_name}.{col.name} {col.type}"
        change = Change("add_column", op.table_name, text, True, op)
        if not col.nullable and col.server_default is None:
            rows = _count(connection, op.table_name)
            if rows:
                change.blocked = (f"{op.table_name} has {rows} row(s) and the required field {col.name} has no "
                                  "default: give it a default or make it optional")
        return change
    if isinstance(op, ops.DropColumnOp):
        c = sql_column(op.column_name)
        rows = _count(connection, op.table_name, c.is_not(None))
        return Change("drop_column", op.table_name, f"drop column {op.table_name}.{op.column_name}", False, op,
                      loss=f"{rows} row(s) have a value in {op.column_name}" if rows else "no row has a value")
    if isinstance(op, ops.CreateIndexOp):
        cols = [str(c) for c in op.columns]
        text = f"add {'unique ' if op.unique else ''}index {op.index_name} on {op.table_name} ({', '.join(cols)})"
        change = Change("add_index", op.table_name, text, True, op)
        if op.unique:
            _block_duplicates(connection, change, [getattr(c, "name", str(c)) for c in op.columns], "unique index", new)
        return change
    if isinstance(op, ops.DropIndexOp):
        return Change("drop_index", op.table_name, f"drop index {op.index_name} on {op.table_name}", True, op)
    if isinstance(op, ops.CreateUniqueConstraintOp):
        change = Change("add_constraint", op.table_name, f"add unique constraint {op.constraint_name} on "
                        f"{op.table_name}", True, op)
        _block_duplicates(connection, change, list(op.columns), "unique constraint", new)
        return change
    if isinstance(op, ops.CreateForeignKeyOp):
        return Change("add_constraint", op.source_table, f"add foreign key {op.constraint_name} on "
                      f"{op.source_table}", True, op)
    if isinstance(op, ops.DropConstraintOp):
        return Change("drop_constraint", op.table_name, f"drop constraint {op.constraint_name} on "
                      f"{op.table_name}", True, op)
    if isinstance(op, ops.AlterColumnOp):
        return _alter(connection, op)
    name = getattr(op, "table_name", "") or ""
    return Change("other", name, f"{type(op).__name__} {name}".strip(), False, op,
                  blocked="the CRM does not apply this kind of change automatically")


def _block_duplicates(connection: Connection, change: Change, cols: list[str], what: str, new: set[str]) -> None:
    """Block a unique index/constraint over values that appear more than once (new tables/columns have none)."""
    if change.table in new or any(f"{change.table}.{c}" in new for c in cols):
        return
    dupes = _duplicates(connection, change.table, cols)
    if dupes:
        change.blocked = (f"{dupes} value(s) of {change.table}.{', '.join(cols)} appear more than once; "
                          f"a {what} cannot be built until they differ")


def _duplicates(connection: Connection, tname: str, cols: list[str]) -> int:
    group = [sql_column(c) for c in cols]
    sub = (select(*group).select_from(sql_table(tname)).where(*[g.is_not(None) for g in group])
           .group_by(*group).having(func.count() > 1).subquery())
    return connection.execute(select(func.count()).select_from(sub)).scalar() or 0


# --- type changes -----------------------------------------------------------------------------------

_INT = re.compile(r"^\s*[+-]?\d+\s*$")
_NUM = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$")
_BOOL = {"0", "1", "true", "false", "t", "f"}


def family(type_) -> str:
    """A coarse kind of a column type: int, num, str, text, bool, date, datetime, json."""
    if isinstance(type_, Boolean):
        return "bool"
    if isinstance(type_, (Integer, BigInteger)):
        return "int"
    if isinstance(type_, Numeric):
        return "num"
    if isinstance(type_, DateTime):
        return "datetime"
    if isinstance(type_, Date):
        return "date"
    if isinstance(type_, JSON):
        return "json"
    if isinstance(type_, Text) or (isinstance(type_, String) and not getattr(type_, "length", None)):
        return "text"
    if isinstance(type_, String):
        return "str"
    return type(type_).__name__.lower()


# (from, to) pairs that never lose or alter a value.
LOSSLESS = {("int", "num"), ("int", "str"), ("int", "text"), ("num", "str"), ("num", "text"), ("str", "text"),
            ("date", "datetime"), ("date", "str"), ("date", "text"), ("datetime", "text"), ("bool", "int")}


def _fits(value, target: str, type_) -> bool:
    text = str(value)
    if target == "int":
        return bool(_INT.match(text)) or (isinstance(value, float) and value.is_integer())
    if target == "num":
        if not _NUM.match(text):
            return False
        scale = getattr(type_, "scale", None)
        if scale is not None and "." in text and len(text.split(".")[1].rstrip("0")) > scale:
            return False
        return True
    if target == "date":
        return bool(_DATE.match(text[:10])) and (len(text) == 10 or text[10:].strip(" T0:.") == "")
    if target == "datetime":
        return bool(_DATETIME.match(text))
    if target == "bool":
        return text.strip().lower() in _BOOL
    if target == "str":
        return len(text) <= (type_.length or 10**9)
    return True


def unconvertible(connection: Connection, tname: str, cname: str, target) -> tuple[int, list]:
    """How many non-empty values of a column would not convert to ``target``, with up to 3 examples."""
    fam = family(target)
    bad, examples = 0, []
    rows = connection.execute(select(sql_column("id"), sql_column(cname)).select_from(sql_table(tname))
                              .where(sql_column(cname).is_not(None))).yield_per(5000)
    for rid, value in rows:
        if not _fits(value, fam, target):
            bad += 1
            if len(examples) < 3:
                examples.append((rid, value))
    return bad, examples


def _alter(connection: Connection, op: ops.AlterColumnOp) -> Change:
    t, c = op.table_name, op.column_name
    if op.modify_type is not None:
        old, new = op.existing_type, op.modify_type
        f_old, f_new = family(old), family(new)
        detail = {"column": c, "old": old, "new": new}
        if f_old == f_new == "str" and (new.length or 0) >= (old.length or 0):
            return Change("widen", t, f"widen column {t}.{c} {old} → {new}", True, op, detail=detail)
        if f_old == f_new == "str":
            longer = _count(connection, t, func.length(sql_column(c)) > new.length)
            return Change("type_change", t, f"narrow column {t}.{c} {old} → {new}", False, op, detail=detail,
                          loss=(f"{longer} row(s) have a value longer than {new.length} characters and would be "
                                "cut") if longer else "every value fits")
        if f_old == f_new == "num":
            o_int = (old.precision or 0) - (old.scale or 0)
            n_int = (new.precision or 0) - (new.scale or 0)
            if n_int >= o_int and (new.scale or 0) >= (old.scale or 0):
                return Change("widen", t, f"widen column {t}.{c} {old} → {new}", True, op, detail=detail)
        text = f"change type of {t}.{c} {old} → {new}"
        change = Change("type_change", t, text, (f_old, f_new) in LOSSLESS or f_old == f_new, op, detail=detail)
        if not change.safe or f_new in ("int", "num", "date", "datetime", "bool", "str"):
            bad, examples = unconvertible(connection, t, c, new)
            if bad:
                shown = ", ".join(f"id {rid}: {value!r}" for rid, value in examples)
                change.blocked = (f"{bad} row(s) have a value of {c} that is not a valid {f_new_label(f_new, new)} "
                                  f"(e.g. {shown}); correct or clear them first")
            elif not change.safe:
                change.loss = "every existing value converts; formatting of the old values is not kept"
        return change
    if op.modify_nullable is False:
        empty = _count(connection, t, sql_column(c).is_(None))
        change = Change("nullable", t, f"make {t}.{c} required", True, op)
        if empty:
            change.blocked = f"{empty} row(s) have no value in {c}; fill them or give the field a default first"
        return change
    if op.modify_nullable is True:
        return Change("nullable", t, f"let {t}.{c} be empty", True, op)
    return Change("other", t, f"alter column {t}.{c}", False, op,
                  blocked="the CRM does not apply this kind of change automatically")


def f_new_label(fam: str, type_) -> str:
    return {"int": "whole number", "num": f"number ({type_})", "date": "date (YYYY-MM-DD)",
            "datetime": "date and time", "bool": "yes/no value",
            "str": f"text of at most {getattr(type_, 'length', '')} characters"}.get(fam, str(type_))


# --- budgets ----------------------------------------------------------------------------------------

_FIXED = {"int": 4, "bool": 1, "date": 4, "datetime": 8}


def row_bytes(table) -> int:
    """The least a full row of ``table`` takes in a PostgreSQL heap page (long values moved out)."""
    size = 24 + (len(table.columns) + 7) // 8
    for col in table.columns:
        fam = family(col.type)
        if isinstance(col.type, BigInteger):
            size += 8
        elif fam in _FIXED:
            size += _FIXED[fam]
        elif fam == "num":
            size += min(PG_TOAST_POINTER, 8 + ((col.type.precision or 18) + 3) // 4 * 2)
        elif fam == "str" and (col.type.length or 0) <= 16:
            size += (col.type.length or 0) * 4 + 1
        else:
            size += PG_TOAST_POINTER
    return size


def budgets(connection: Connection, metadata: MetaData) -> tuple[list[str], list[str]]:
    """(warnings, limits exceeded) for the tables of ``metadata`` on the database in use."""
    dialect = connection.dialect.name
    limit = MAX_COLUMNS.get(dialect, 1000)
    out, over = [], []
    for table in metadata.tables.values():
        n = len(table.columns)
        if n > limit:
            over.append(f"{table.name} would have {n} columns; {dialect} allows at most {limit} per table")
        elif n >= limit * BUDGET_WARN:
            out.append(f"{table.name} has {n} of the {limit} columns {dialect} allows per table")
        if dialect == "postgresql":
            size = row_bytes(table)
            if size > PG_MAX_ROW:
                over.append(f"a full row of {table.name} would need at least {size} bytes; PostgreSQL rows "
                            f"cannot exceed {PG_MAX_ROW} bytes")
            elif size >= PG_MAX_ROW * BUDGET_WARN:
                out.append(f"a full row of {table.name} needs at least {size} of the {PG_MAX_ROW} bytes "
                           "PostgreSQL allows per row")
    return out, over
