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


class PermissionDenied(RecordError):
    """The access policy does not allow the action (on a record the user may see)."""

    status = 403


class HookRefused(RecordError):
    """Raised by a plugin's ``crm_before_*`` hook to refuse a change; ``message`` is shown to the user.

    Nothing is written (the transaction is rolled back); the API answers 422 with the message.
    """

    status = 422

    def __init__(self, message: str, plugin: str | None = None):
        self.message = message
        self.plugin = plugin  # filled in by the plugin manager when left out
        super().__init__(message)


class HookFailed(RecordError):
    """A plugin's record hook raised an unexpected exception: the change was rolled back."""

    status = 422

    def __init__(self, message: str, plugin: str, hook: str):
        self.plugin, self.hook = plugin, hook
        super().__init__(message)


class PluginError(CrmError):
    """A plugin could not be loaded or used; the message names the plugin."""

    def __init__(self, plugin: str, problem: str, *, hook: str | None = None,
                 original: BaseException | None = None):
        self.plugin, self.problem, self.hook, self.original = plugin, problem, hook, original
        super().__init__(f"plugin '{plugin}': {problem}")
