"""The import upload shared by the screens and the REST API."""
from __future__ import annotations

from crm_meta.services import audit
from crm_meta.services.importing import ImportRefused, ValueReader, import_rows, read_table
from crm_meta.web import context
from crm_meta.web.i18n import current_lang


def run_import(entity_name: str, upload) -> int:
    """Import the uploaded file (a werkzeug FileStorage) into ``entity_name``; commit and audit.

    Raises ImportRefused (nothing saved) with every problem, or PermissionDenied.
    """
    if upload is None or not upload.filename:
        raise ImportRefused([_problem("no file was uploaded / 没有上传文件")])
    data = upload.read()
    table = read_table(data, upload.filename)
    service = context.records(entity_name)
    b = context.build()
    reader = ValueReader(context.session(), b.models, context.policy(), context.dictionaries(), current_lang())
    session = context.session()
    try:
        created = import_rows(service, table, reader)
    except BaseException:
        session.rollback()
        raise
    audit.log_event(session, b.models.system, context.actor(), "import", entity=entity_name, count=created,
                    detail={"file": upload.filename[:200], "rows": created})
    session.commit()
    return created


def _problem(reason: str):
    from crm_meta.services.importing import Problem

    return Problem(0, "", reason)
