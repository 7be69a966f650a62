"""Bring the database to the current build at startup: additive migration plus dictionary items."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm_meta.db.tables import ModelSet
from crm_meta.services.dictionaries import sync_from_registry

STATE_KEY = "schema_digest"


def _stored_digest(engine: Engine, models: ModelSet) -> str | None:
    state = models.system["state"]
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, state.name):
            return None
        return conn.execute(select(state.c.value).where(state.c.key == STATE_KEY)).scalar()


def system_digest(models: ModelSet) -> str:
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


def sync_schema(engine: Engine, models: ModelSet) -> list:
    """Apply safe changes and refresh dictionary items when the dictionary changed since last start.

    Runs under a lock (PostgreSQL advisory lock; SQLite's write lock via BEGIN IMMEDIATE) so that
    several workers starting at once migrate once; destructive changes are refused.
    """
    digest = f"{models.registry.digest}:{system_digest(models)}"
    if _stored_digest(engine, models) == digest:
        return []
    from crm_meta.services.schema_changes import bump_generation, store_snapshot
    from crm_meta.db import migrate  # Alembic is imported only when there is something to do

    state = models.system["state"]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7262010)")
        try:
            changes = migrate.apply(conn, models.metadata, models.registry)
            sync_from_registry(conn, models.system["dict_item"], models.registry)
            store_snapshot(conn, set(models.metadata.tables))  # what `crm schema drift` compares with
            bump_generation(conn)  # running workers of an older dictionary rebuild on their next request
            if conn.execute(select(state.c.key).where(state.c.key == STATE_KEY)).first():
                conn.execute(state.update().where(state.c.key == STATE_KEY).values(value=digest))
            else:
                conn.execute(state.insert().values(key=STATE_KEY, value=digest))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return changes
