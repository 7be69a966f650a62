"""Bring the database to the current build at startup: additive migration plus dictionary items."""
from __future__ import annotations

from sqlalchemy.engine import Engine

from crm_meta.db.tables import ModelSet
from crm_meta.services.schema_changes import DIGEST_KEY, applied_digest, get_state, record_applied, write_lock


def _stored_digest(engine: Engine, models: ModelSet) -> str | None:
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, models.system["state"].name):
            return None
        return get_state(conn, DIGEST_KEY)


def sync_schema(engine: Engine, models: ModelSet) -> list:
    """Apply safe changes and refresh dictionary items when the dictionary changed since last start.

    Runs under the schema write lock so that several workers starting at once migrate once;
    destructive changes are refused.
    """
    if _stored_digest(engine, models) == applied_digest(models):
        return []
    from crm_meta.db import migrate  # Alembic is imported only when there is something to do

    with engine.connect() as conn:
        write_lock(conn)
        try:
            changes = migrate.apply(conn, models.metadata, models.registry)
            record_applied(conn, models)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return changes
