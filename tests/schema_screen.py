"""Drive the schema admin screens over HTTP (used by the multi-worker test)."""
from __future__ import annotations

import os


def add_custom_field(browser, entity: str, name: str, zh: str, en: str) -> None:
    # TEMPORARY until the screen lands: apply through the service on the same database.
    from crm_meta.cli_schema import _service
    from crm_meta.schema.overlay import CustomField, field_spec

    sc, engine = _service()
    sc.apply(lambda o: o.with_field(CustomField(entity, name, field_spec("string", zh, en, length=64), list=True)),
             tables={entity})
    engine.dispose()
