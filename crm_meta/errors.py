"""Errors that carry where they came from, so users see the cause and not a traceback."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class SourceLocation:
    """A place in a dictionary file (1-based line and column)."""

    path: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.column}"
        return self.path


@dataclass(frozen=True)
class SchemaIssue:
    """One problem in the data dictionary: where, which key, what is wrong."""

    location: SourceLocation
    key: str
    message: str

    def __str__(self) -> str:
        key = f"{self.key}: " if self.key else ""
        return f"{self.location}: {key}{self.message}"


class CrmError(Exception):
    """Base of every error the CRM reports to users."""


class SchemaErrors(CrmError):
    """The data dictionary is invalid; holds every issue found, sorted by place."""

    def __init__(self, issues: list[SchemaIssue]):
        self.issues = sorted(issues, key=lambda i: (i.location, i.key, i.message))
        super().__init__(self.report())

    def report(self) -> str:
        return "\n".join(str(i) for i in self.issues)


class MigrationError(CrmError):
    """A schema change was refused (destructive, or failed and rolled back)."""


class RecordError(CrmError):
    """A write was refused; the data is unchanged."""

    status = 422


class ValidationFailed(RecordError):
    """Field values did not pass validation: ``errors`` maps field name → messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


class VersionConflict(RecordError):
    """The record was changed by someone else since it was read."""

    status = 409


class RecordNotFound(RecordError):
    """No such record (or not visible to the user)."""

    status = 404
