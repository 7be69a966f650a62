"""Import records from CSV or Excel: every row through the records service (the same validation,
numbering, hooks and access policy as a form), all or nothing.

Columns are matched by field name or by its Chinese or English label (the headers an export
writes). Values are taken as people write them: dictionary labels or codes, user names, the title
of a referenced record, 是/否. When any row is refused nothing is saved, and every problem is
reported as (row, column, reason) — the row number as a spreadsheet shows it (header = row 1).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable

from sqlalchemy import select

from crm_meta.errors import RecordError, ValidationFailed
from crm_meta.metadata.model import Entity, Field

MAX_IMPORT_ROWS = 10_000
MAX_IMPORT_BYTES = 10 * 1024 * 1024
TRUE, FALSE = {"1", "true", "yes", "y", "是", "√"}, {"0", "false", "no", "n", "否", "×", ""}


@dataclass(frozen=True)
class Problem:
    row: int
    column: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


class ImportRefused(Exception):
    """Nothing was imported; ``problems`` say where and why."""

    def __init__(self, problems: list[Problem]):
        super().__init__(f"{len(problems)} problem(s); nothing was imported")
        self.problems = problems


def read_table(data: bytes, filename: str) -> list[list[Any]]:
    """The cells of the first sheet (xlsx) or of a CSV file (UTF-8, with or without BOM; GBK too)."""
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRefused([Problem(0, "", f"file larger than {MAX_IMPORT_BYTES // 1024 // 1024} MB")])
    if filename.lower().endswith((".xlsx", ".xlsm")) or data[:2] == b"PK":
        from openpyxl import load_workbook

        try:
            sheet = load_workbook(io.BytesIO(data), read_only=True, data_only=True).worksheets[0]
        except Exception as exc:  # noqa: BLE001 — any unreadable workbook is the user's input error
            raise ImportRefused([Problem(0, "", f"not a readable Excel file ({type(exc).__name__})")]) from None
        return [list(r) for r in sheet.iter_rows(values_only=True)]
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ImportRefused([Problem(0, "", "the CSV file is neither UTF-8 nor GBK text")])
    return [row for row in csv.reader(io.StringIO(text))]


def match_columns(entity: Entity, header: list[Any], writable: Callable[[Field], bool]) -> tuple[dict[int, Field], list[Problem]]:
    """Column index → field, for the fields the user may write; unknown columns are problems
    (an ``ID`` column and empty headers are ignored)."""
    by_key: dict[str, Field] = {}
    for f in entity.user_fields:
        for key in (f.name, f.label.zh, f.label.en):
            by_key.setdefault(str(key).strip().lower(), f)
    out, problems = {}, []
    for i, raw in enumerate(header):
        name = str(raw or "").strip()
        if not name or name.lower() == "id":
            continue
        f = by_key.get(name.lower())
        if f is None or f.system:
            problems.append(Problem(1, name, "unknown column / 未知的列"))
        elif not writable(f):
            if f.type != "autonumber":  # an export's record number column is simply skipped
                problems.append(Problem(1, name, "this field cannot be imported / 此字段不能导入"))
        else:
            out[i] = f
    return out, problems


class ValueReader:
    """Turns cell text into what the records service expects (codes, ids, ISO dates)."""

    def __init__(self, session, models, policy, dictionaries, lang: str):
        self.session, self.models, self.policy, self.dicts, self.lang = session, models, policy, dictionaries, lang
        self._users: dict[str, int] | None = None

    def __call__(self, f: Field, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return [] if f.is_multi else None
        text = value.strip() if isinstance(value, str) else value
        if f.storage == "code":
            return self._code(f, text)
        if f.is_multi:
            parts = [p.strip() for p in str(text).replace("，", ",").replace("、", ",").split(",") if p.strip()]
            return [self._code(f, p) for p in parts]
        if f.storage == "fk_user":
            return self._user(text)
        if f.storage == "fk_entity":
            return self._reference(f, text)
        if f.storage == "boolean":
            low = str(text).strip().lower()
            return True if low in TRUE else False if low in FALSE else text
        if isinstance(text, datetime):
            return text.isoformat() if f.storage == "datetime" else text.date().isoformat()
        if isinstance(text, date):
            return text.isoformat()
        if f.storage in ("string", "text") and not isinstance(text, str):
            return str(int(text)) if isinstance(text, float) and text.is_integer() else str(text)
        return text

    def _code(self, f: Field, text: Any) -> Any:
        text = str(text)
        for item in self.dicts.items(f.dictionary, active_only=False):
            if text in (item.code, item.label.zh, item.label.en) or text.lower() == item.label.en.lower():
                return item.code
        return text  # the service names it as not a valid choice

    def _user(self, text: Any) -> Any:
        if self._users is None:
            from flask_appbuilder.security.sqla.models import User

            self._users = {}
            for u in self.session.execute(select(User.id, User.username, User.first_name, User.last_name)):
                for key in (u.username, f"{u.last_name or ''}{u.first_name or ''}", f"{u.first_name} {u.last_name}"):
                    self._users.setdefault(key.strip(), u.id)
        text = str(text)
        if "(" in text and text.endswith(")"):
            text = text.rsplit("(", 1)[1][:-1]
        return self._users.get(text.strip(), text)

    def _reference(self, f: Field, text: Any) -> Any:
        if isinstance(text, (int, float)) or str(text).isdigit():
            return int(text)
        target = self.models.registry.entity(f.entity)
        model = self.models.model(f.entity)
        if not target.title:
            return text
        col = getattr(model, target.field(target.title).column)
        stmt = self.policy.scope(f.entity, select(model.id).where(col == str(text)).limit(2), model)
        ids = list(self.session.execute(stmt).scalars())
        return ids[0] if len(ids) == 1 else text


def import_rows(service, table: list[list[Any]], reader: ValueReader) -> int:
    """Create one record per row through ``service``; all or nothing. Returns the number created."""
    entity = service.entity
    if not table:
        raise ImportRefused([Problem(0, "", "the file is empty / 文件为空")])
    access = service.policy.access(entity.name)
    columns, problems = match_columns(
        entity, table[0], lambda f: f.editable and f.name not in access.hidden and f.name not in access.readonly)
    body = [r for r in table[1:] if any(v not in (None, "") for v in r)]
    if len(body) > MAX_IMPORT_ROWS:
        problems.append(Problem(0, "", f"more than {MAX_IMPORT_ROWS} rows; split the file"))
    if problems:
        raise ImportRefused(problems)
    header = {i: str(table[0][i]).strip() for i in columns}
    by_field = {f.name: header[i] for i, f in columns.items()}
    service.require("import")
    created = 0
    for n, row in enumerate(table[1:], start=2):
        if not any(v not in (None, "") for v in row):
            continue
        data = {f.name: reader(f, row[i] if i < len(row) else None) for i, f in columns.items()}
        # No savepoints: a refused row wrote nothing (validation comes before any write), and a
        # failure after writing rolls the whole session back — either way the caller rolls back
        # everything when there is a problem, so all rows are still checked and reported.
        try:
            service.create(data)
            created += 1
        except ValidationFailed as exc:
            for name, messages in exc.errors.items():
                problems += [Problem(n, by_field.get(name, name), m) for m in messages]
        except RecordError as exc:
            problems.append(Problem(n, "", str(exc)))
        if len(problems) >= 200:
            break
    if problems:
        raise ImportRefused(problems)
    return created
