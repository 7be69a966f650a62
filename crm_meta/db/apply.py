"""Run a plan's steps inside the caller's transaction, on PostgreSQL and SQLite alike.

Both databases run DDL inside a transaction (SQLite once ``BEGIN`` has been issued), so a step that
fails leaves nothing behind when the caller rolls back. Column renames and drops use the
``ALTER TABLE`` both databases know; type changes use ``ALTER … TYPE … USING`` on PostgreSQL and, on
SQLite, a rewrite of the declared type when the storage class stays the same (no data moves) or a
shadow column (add, copy with a cast, drop, rename) when it does not.
"""
from __future__ import annotations

import re

from alembic.operations import Operations, ops
from sqlalchemy import DefaultClause, text
from sqlalchemy.engine import Connection

from crm_meta.db.plan import Change, Plan, context, family
from crm_meta.errors import MigrationError

# SQLite type affinities (https://sqlite.org/datatype3.html §3.1) of our column families.
_AFFINITY = {"int": "INTEGER", "bool": "NUMERIC", "num": "NUMERIC", "date": "NUMERIC", "datetime": "NUMERIC",
             "str": "TEXT", "text": "TEXT", "json": "NUMERIC"}

_SQLITE_CAST = {"int": "INTEGER", "num": "REAL", "str": "TEXT", "text": "TEXT", "bool": "INTEGER"}


def run(connection: Connection, metadata, plan: Plan, fail_after: int | None = None) -> list[Change]:
    """Apply every step of ``plan`` (the caller commits or rolls back).

    ``fail_after`` makes the run stop with an error after that many steps (fault-injection tests).
    """
    operations = Operations(context(connection, metadata))
    for n, change in enumerate(plan.changes):
        if fail_after is not None and n >= fail_after:
            raise MigrationError(f"injected failure before step {n + 1}: {change.text}")
        try:
            _step(connection, operations, change)
        except MigrationError:
            raise
        except Exception as exc:  # the database refused: name the step
            message = " ".join(str(getattr(exc, "orig", exc)).split())[:300]
            raise MigrationError(f"the database refused '{change.text}': {message}") from exc
    return plan.changes


def _q(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def _step(connection: Connection, operations: Operations, change: Change) -> None:
    kind, t = change.kind, change.table
    if kind == "rename_table":
        connection.exec_driver_sql(f"ALTER TABLE {_q(connection, change.detail['old'])} RENAME TO "
                                   f"{_q(connection, change.detail['new'])}")
    elif kind == "rename_column":
        connection.exec_driver_sql(f"ALTER TABLE {_q(connection, t)} RENAME COLUMN "
                                   f"{_q(connection, change.detail['old'])} TO {_q(connection, change.detail['new'])}")
    elif kind == "drop_column":
        connection.exec_driver_sql(f"ALTER TABLE {_q(connection, t)} DROP COLUMN {_q(connection, change.op.column_name)}")
    elif kind in ("widen", "type_change"):
        _retype(connection, change)
    elif kind == "add_column":
        # The column alone: its index, unique constraint and foreign key are steps of their own in the plan
        # (Alembic's add_column would create them too, and the later step would then fail).
        column = change.op.column._copy()
        fill = change.detail.get("fill")
        if fill is not None:  # a required field's declared default fills the existing rows
            column.server_default = DefaultClause(str(int(fill) if isinstance(fill, bool) else fill))
        operations.schema_obj.table(t, column)
        operations.impl.add_column(t, column)
        if fill is not None and connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"ALTER TABLE {_q(connection, t)} ALTER COLUMN {_q(connection, column.name)} "
                                       "DROP DEFAULT")
    elif kind == "nullable" and connection.dialect.name == "sqlite":
        _sqlite_nullable(connection, t, change.op.column_name, change.op.modify_nullable)
    elif isinstance(change.op, ops.CreateForeignKeyOp) and connection.dialect.name == "sqlite":
        _sqlite_foreign_key(connection, change.op)
    elif isinstance(change.op, ops.CreateUniqueConstraintOp) and connection.dialect.name == "sqlite":
        # SQLite cannot add a constraint to a table: a unique index of the same name does the same job
        # (build_plan treats the two as one)
        cols = ", ".join(_q(connection, c) for c in change.op.columns)
        connection.exec_driver_sql(f"CREATE UNIQUE INDEX {_q(connection, change.op.constraint_name)} ON "
                                   f"{_q(connection, t)} ({cols})")
    else:
        operations.invoke(change.op)


def _type_sql(connection: Connection, type_) -> str:
    return type_.compile(dialect=connection.dialect)


def _retype(connection: Connection, change: Change) -> None:
    t, c = change.table, change.detail["column"]
    old, new = change.detail["old"], change.detail["new"]
    new_sql = _type_sql(connection, new)
    qt, qc = _q(connection, t), _q(connection, c)
    if connection.dialect.name == "postgresql":
        fam = family(new)
        using = f"LEFT({qc}::text, {new.length})" if fam == "str" else f"{qc}::text::{new_sql}"
        if fam == "text" or (fam == family(old) and fam != "str"):
            using = f"{qc}::{new_sql}"
        if family(old) == "bool" and fam == "int":
            using = f"{qc}::int"
        connection.exec_driver_sql(f"ALTER TABLE {qt} ALTER COLUMN {qc} TYPE {new_sql} USING {using}")
        return
    if _AFFINITY.get(family(old)) == _AFFINITY.get(family(new)):
        _sqlite_declared_type(connection, t, c, new_sql, cut=new.length if family(new) == "str" else None)
    else:
        _sqlite_shadow(connection, t, c, new, new_sql)


def _sqlite_declared_type(connection: Connection, t: str, c: str, new_sql: str, cut: int | None) -> None:
    """Same storage class: rewrite the column's declared type in the schema (no row moves)."""
    if cut:
        connection.exec_driver_sql(f'UPDATE "{t}" SET "{c}" = substr("{c}", 1, {int(cut)}) '
                                   f'WHERE length("{c}") > {int(cut)}')
    _sqlite_column_def(connection, t, c, lambda m: m.group(1) + new_sql + m.group(3))


def _sqlite_nullable(connection: Connection, t: str, c: str, nullable: bool) -> None:
    """Add or remove NOT NULL in the column's definition (the plan has checked that no row is empty)."""
    _sqlite_column_def(connection, t, c, lambda m: m.group(1) + m.group(2) + ("" if nullable else " NOT NULL")
                       + re.sub(r"\s+NOT\s+NULL\b", "", m.group(3), flags=re.IGNORECASE))


# A column definition in SQLite's CREATE TABLE text: (name and space)(declared type)(the rest, up to , or ))
_NOT_TYPE = r"(?!(?:NOT|NULL|DEFAULT|PRIMARY|UNIQUE|CHECK|REFERENCES|COLLATE|CONSTRAINT|GENERATED)\b)"


def _sqlite_column_def(connection: Connection, t: str, c: str, edit) -> None:
    sql = connection.exec_driver_sql("SELECT sql FROM sqlite_schema WHERE type='table' AND name=?", (t,)).scalar()
    pattern = re.compile(r'((?:^|[(,])\s*"?' + re.escape(c) + r'"?\s+)'
                         r'([A-Za-z]+(?:\s+' + _NOT_TYPE + r'[A-Za-z]+)*(?:\s*\([^)]*\))?)'
                         r"((?:'(?:[^']|'')*'|\([^()]*\)|[^,()'])*)",
                         re.IGNORECASE)
    new_table_sql, n = pattern.subn(edit, sql, count=1)
    if n != 1:
        raise MigrationError(f"cannot find column {t}.{c} in its table definition")
    _sqlite_write_table_sql(connection, t, new_table_sql)


def _sqlite_write_table_sql(connection: Connection, t: str, new_table_sql: str) -> None:
    version = connection.exec_driver_sql("PRAGMA schema_version").scalar()
    connection.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        connection.exec_driver_sql("UPDATE sqlite_schema SET sql=? WHERE type='table' AND name=?", (new_table_sql, t))
        connection.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    finally:
        connection.exec_driver_sql("PRAGMA writable_schema=OFF")


def _sqlite_foreign_key(connection: Connection, op) -> None:
    """SQLite cannot ALTER-add a constraint: write the foreign key into the table's definition (no row moves),
    as CREATE TABLE would have it, then check the existing rows against it."""
    t, q = op.source_table, (lambda name: _q(connection, name))
    clause = (f"CONSTRAINT {q(op.constraint_name)} FOREIGN KEY({', '.join(map(q, op.local_cols))}) REFERENCES "
              f"{q(op.referent_table)} ({', '.join(map(q, op.remote_cols))})")
    for key in ("ondelete", "onupdate"):
        if op.kw.get(key):
            clause += f" ON {key[2:].upper()} {op.kw[key]}"
    sql = connection.exec_driver_sql("SELECT sql FROM sqlite_schema WHERE type='table' AND name=?", (t,)).scalar()
    body = sql.rstrip()
    if not body.endswith(")"):
        raise MigrationError(f"cannot read the definition of table {t}")
    _sqlite_write_table_sql(connection, t, f"{body[:-1].rstrip()}, \n\t{clause}\n)")
    bad = connection.exec_driver_sql(f"PRAGMA foreign_key_check({q(t)})").fetchall()
    if bad:
        raise MigrationError(f"{len(bad)} row(s) of {t} point at no row of {op.referent_table}")


def _sqlite_shadow(connection: Connection, t: str, c: str, new, new_sql: str) -> None:
    """Another storage class: add a shadow column, copy with a cast, drop the old one, rename."""
    indexes = []
    for row in connection.exec_driver_sql(f'PRAGMA index_list("{t}")').mappings():
        cols = [r["name"] for r in connection.exec_driver_sql(f'PRAGMA index_info("{row["name"]}")').mappings()]
        if c in cols:
            if row["origin"] != "c":
                raise MigrationError(f"{t}.{c} is part of a unique constraint declared with the table; SQLite "
                                     "cannot change its type in place")
            indexes.append(connection.exec_driver_sql(
                "SELECT sql FROM sqlite_schema WHERE type='index' AND name=?", (row["name"],)).scalar())
            connection.exec_driver_sql(f'DROP INDEX "{row["name"]}"')
    shadow = f"{c}__retype"
    cast = _SQLITE_CAST.get(family(new))
    value = f'CAST("{c}" AS {cast})' if cast else f'"{c}"'
    if family(new) == "bool":
        value = f"""CASE WHEN lower(trim("{c}")) IN ('1','true','t') THEN 1 WHEN "{c}" IS NULL THEN NULL ELSE 0 END"""
    connection.exec_driver_sql(f'ALTER TABLE "{t}" ADD COLUMN "{shadow}" {new_sql}')
    connection.exec_driver_sql(f'UPDATE "{t}" SET "{shadow}" = {value}')
    connection.exec_driver_sql(f'ALTER TABLE "{t}" DROP COLUMN "{c}"')
    connection.exec_driver_sql(f'ALTER TABLE "{t}" RENAME COLUMN "{shadow}" TO "{c}"')
    for sql in indexes:
        connection.exec_driver_sql(sql)


def execute(connection: Connection, metadata, plan: Plan, *, allow_destructive: bool,
            fail_after: int | None = None) -> list[Change]:
    """Refuse blocked steps always and destructive ones unless allowed; then run the plan."""
    if plan.blocked:
        raise MigrationError("the change cannot be applied; nothing was changed:\n"
                             + "\n".join(f"  {c.text}: {c.blocked}" for c in plan.blocked))
    if plan.limits:
        raise MigrationError("the change exceeds what the database allows; nothing was changed:\n"
                             + "\n".join(f"  {w}" for w in plan.limits))
    if plan.destructive and not allow_destructive:
        raise MigrationError(
            "the data dictionary needs changes that could lose data; nothing was changed:\n"
            + "\n".join(f"  {c.text}" + (f" ({c.loss})" if c.loss else "") for c in plan.destructive)
            + "\nReview them with `flask --app app crm schema plan`, then run `flask --app app crm schema apply "
              "--allow-destructive` (a backup is taken first), or put the field or entity back in the dictionary.")
    return run(connection, metadata, plan, fail_after)
