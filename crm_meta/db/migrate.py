"""Plan, then apply: compare the built tables with the database and run additive changes via Alembic."""
from __future__ import annotations

from dataclasses import dataclass

from alembic.autogenerate import produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from crm_meta.errors import MigrationError

SAFE_OPS = (ops.CreateTableOp, ops.AddColumnOp, ops.CreateIndexOp, ops.CreateUniqueConstraintOp,
            ops.CreateForeignKeyOp)


@dataclass(frozen=True)
class Change:
    """One step of a plan, printable for admins."""

    op: ops.MigrateOperation
    safe: bool
    text: str

    def __str__(self) -> str:
        return f"{'  ' if self.safe else '! '}{self.text}"


def _describe(op: ops.MigrateOperation) -> str:
    if isinstance(op, ops.CreateTableOp):
        return f"add table {op.table_name} ({sum(1 for c in op.columns if hasattr(c, 'primary_key'))} columns)"
    if isinstance(op, ops.DropTableOp):
        return f"drop table {op.table_name}"
    if isinstance(op, ops.AddColumnOp):
        return f"add column {op.table_name}.{op.column.name} {op.column.type}"
    if isinstance(op, ops.DropColumnOp):
        return f"drop column {op.table_name}.{op.column_name}"
    if isinstance(op, ops.CreateIndexOp):
        return f"add {'unique ' if op.unique else ''}index {op.index_name} on {op.table_name} ({', '.join(map(str, op.columns))})"
    if isinstance(op, ops.DropIndexOp):
        return f"drop index {op.index_name} on {op.table_name}"
    if isinstance(op, ops.AlterColumnOp):
        parts = []
        if op.modify_type is not None:
            parts.append(f"type {op.existing_type} → {op.modify_type}")
        if op.modify_nullable is not None:
            parts.append("allow empty" if op.modify_nullable else "make required")
        return f"alter column {op.table_name}.{op.column_name}: {', '.join(parts) or 'change'}"
    return f"{type(op).__name__} {getattr(op, 'table_name', '')}".strip()


def _is_safe(op: ops.MigrateOperation) -> bool:
    if isinstance(op, ops.AddColumnOp):
        col = op.column
        return col.nullable or col.server_default is not None
    if isinstance(op, ops.AlterColumnOp):
        return op.modify_type is None and op.modify_nullable is True
    return isinstance(op, SAFE_OPS)


def _flatten(container) -> list[ops.MigrateOperation]:
    out = []
    for op in container.ops:
        if isinstance(op, (ops.ModifyTableOps, ops.UpgradeOps)):
            out += _flatten(op)
        else:
            out.append(op)
    return out


def _context(connection: Connection, metadata: MetaData) -> MigrationContext:
    ours = set(metadata.tables)

    def include_name(name, type_, parent_names):
        if type_ == "table":
            return name in ours or not name.startswith(("ab_", "alembic", "sqlite_"))
        return True

    return MigrationContext.configure(connection, opts={
        "include_name": include_name,
        "compare_type": True,
        "target_metadata": metadata,
    })


def plan(connection: Connection, metadata: MetaData) -> list[Change]:
    """What it takes to bring the database to ``metadata``; unsafe steps are marked."""
    script = produce_migrations(_context(connection, metadata), metadata)
    return [Change(op, _is_safe(op), _describe(op)) for op in _flatten(script.upgrade_ops)]


def apply(connection: Connection, metadata: MetaData, *, allow_destructive: bool = False) -> list[Change]:
    """Apply the plan inside the caller's transaction; refuse destructive steps unless allowed."""
    changes = plan(connection, metadata)
    refused = [c for c in changes if not c.safe]
    if refused and not allow_destructive:
        raise MigrationError(
            "the data dictionary needs changes that could lose data; nothing was changed:\n"
            + "\n".join(f"  {c.text}" for c in refused)
            + "\nPut the field or entity back in the dictionary (or restore the plugin that declared it);"
            + " columns are never dropped or narrowed automatically."
        )
    operations = Operations(_context(connection, metadata))
    for change in changes:
        operations.invoke(change.op)
    return changes
