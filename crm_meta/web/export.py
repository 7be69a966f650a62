"""The export download shared by the list screen and the REST API: policy, masking and audit."""
from __future__ import annotations

from urllib.parse import quote

from flask import Response, abort

from crm_meta.services import audit, exporting
from crm_meta.services.masking import mask
from crm_meta.web import context
from crm_meta.web.forms import user_name
from crm_meta.web.i18n import current_lang


def export_response(entity, datamodel, filters, order_column: str, order_direction: str,
                    search: str | None, fmt: str) -> Response:
    """The rows the user may read that match the filters, as the user sees them, in CSV or Excel."""
    if fmt not in exporting.FORMATS:
        abort(400)
    policy = context.policy()
    access = policy.access(entity.name)
    if not access.can("export"):
        abort(403)
    lang = current_lang()
    _count, records = datamodel.query(filters, order_column, order_direction, page=0,
                                      page_size=exporting.MAX_EXPORT_ROWS, search=search)
    dicts = context.dictionaries()
    fields = exporting.columns(entity, access.hidden)
    header = ["ID"] + [f.label.get(lang) for f in fields]
    rows = list(exporting.rows_of(
        entity, records, fields,
        label=lambda dictionary, code: dicts.label(dictionary, code, lang),
        user=user_name,
        masked=lambda name, value: mask(access.masked[name], value) if name in access.masked else value))
    data = exporting.write(fmt, header, rows, entity.label.get(lang))
    audit.log_event(context.session(), context.build().models.system, context.actor(), "export",
                    entity=entity.name, count=len(rows), detail={"format": fmt, "rows": len(rows),
                                                                  "search": search or None})
    context.session().commit()
    filename = f"{entity.label.get(lang)}.{fmt}"
    return Response(data, content_type=exporting.FORMATS[fmt], headers={  # (mimetype= would add a second charset)
        "Content-Disposition": f"attachment; filename=\"{entity.name}.{fmt}\"; filename*=UTF-8''{quote(filename)}",
        "X-Export-Rows": str(len(rows))})
