"""Export records as CSV or Excel, as the user sees them: their rows, their columns, masked values.

The caller passes rows already limited by the access policy; this module decides the columns
(hidden fields left out), turns stored values into what people read (labels for codes, names for
users, masked sensitive values) and writes the file. Framework-free.
"""
from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Iterable

from crm_meta.metadata.model import Entity, Field

MAX_EXPORT_ROWS = 100_000  # one export never holds more (the rest: narrow the filters)
FORMATS = {"csv": "text/csv; charset=utf-8", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def columns(entity: Entity, hidden: Iterable[str]) -> list[Field]:
    """Every field the user may see, record number first, system fields last."""
    hidden = set(hidden)
    return [f for f in entity.fields if f.name not in hidden]


def cell(f: Field, value: Any, *, label: Callable[[str, str], str], user: Callable[[Any], str],
         masked: Callable[[str, Any], Any]) -> Any:
    """One exported value: readable text for codes, users and references; numbers stay numbers."""
    if f.is_multi:
        return "、".join(label(f.dictionary, c) for c in (value or []))
    if value is None:
        return ""
    if f.storage == "code":
        return label(f.dictionary, value)
    if f.storage == "fk_user":
        return user(value)
    if f.storage == "fk_entity":
        return str(value)
    if f.storage == "boolean":
        return value
    if isinstance(value, Decimal):
        return float(value)
    return masked(f.name, value)


def rows_of(entity: Entity, records: Iterable[Any], fields: list[Field], **convert: Callable) -> Iterable[list[Any]]:
    for obj in records:
        out = [obj.id]
        for f in fields:
            value = list(getattr(obj, f.name)) if f.is_multi else getattr(obj, f.name if f.is_fk else f.column)
            out.append(cell(f, value, **convert))
        yield out


def write(fmt: str, header: list[str], rows: Iterable[list[Any]], title: str) -> bytes:
    if fmt == "xlsx":
        from openpyxl import Workbook

        wb = Workbook(write_only=True)
        ws = wb.create_sheet(title[:31] or "export")
        ws.append(header)
        for row in rows:
            ws.append([_inert(v) for v in row])
        buf = io.BytesIO()
        wb.save(buf)
        return buf.getvalue()
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_text(_inert(v)) for v in row])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")  # BOM: Excel opens UTF-8 CSV correctly


def _csv_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    return value


def _inert(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula (=, +, -, @) is prefixed with a quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") and not _number(value):
        return "'" + value
    return value


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
