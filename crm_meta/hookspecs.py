"""Every plugin hook of crm_meta, in one place (pluggy project name ``crm_meta``).

A plugin implements some of these functions, each decorated with ``crm_meta.hookimpl`` and named
exactly like the hook; it may accept only the arguments it needs. docs/plugins.md has an example of
each; tests/test_hookspecs_docs.py fails when a hook here lacks a docstring, documentation or a test.

Record hooks (``crm_before_*`` / ``crm_after_*``) run inside the database transaction of the
change, for every write path (screens, REST API, imports, scripts using ``RecordService``):

* a ``crm_before_*`` hook refuses the change by raising ``crm_meta.errors.HookRefused(message)``;
  the user sees ``message`` (a flash on the screen, HTTP 422 on the API) and nothing is written;
* any other exception in any record hook rolls the whole change back and reaches the user as
  "plugin <name> failed … nothing was saved" (HTTP 422); the traceback goes to the server log.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import pluggy

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from pathlib import Path

    import click
    from sqlalchemy.orm import Session

    from crm_meta.metadata.fieldtypes import CustomType, FieldType
    from crm_meta.plugins import Job, Widget
    from crm_meta.services.records import Actor

PROJECT = "crm_meta"

hookspec = pluggy.HookspecMarker(PROJECT)


# -- start-up -------------------------------------------------------------------------------------

@hookspec
def crm_schema_paths() -> Iterable[str | Path]:
    """Data dictionary files or directories this plugin contributes.

    When: at start-up (``create_app``) and by ``flask crm check`` / ``flask crm plugins``, before
    the dictionary is loaded. Arguments: none.
    Returns: a list of paths (absolute, e.g. ``Path(__file__).parent / "schemas"``) of ``*.yaml``
    files or directories holding them. They are merged with ``schemas/`` (``CRM_SCHEMA_PATH``) and go
    through the same validation and start-up migration: new entities, dictionaries, menus, and fields
    added to existing entities with an ``extend:`` section. An invalid file stops the app with every
    error as ``path:line:col: message`` and a line naming the plugin.
    """


@hookspec
def crm_field_types() -> Iterable[CustomType | FieldType]:
    """Field types this plugin adds to the dictionary language (``type: <name>`` on a field).

    When: at start-up (``create_app``, collected once per app) and by ``flask crm check`` /
    ``flask crm schema …``, before the dictionary is validated. Arguments: none.
    Returns: a list of ``crm_meta.metadata.fieldtypes.CustomType(name, base, label=None, length=None,
    pattern=None, message=None, normalize=None, check=None, text_search=None, keys=None)``. A type is
    built on a built-in ``base`` type (string, text, integer, decimal, money, boolean, date, datetime,
    phone, email, url), whose column, form widget and REST/OpenAPI schema it reuses; on every create
    and update (screens, REST, imports) the submitted text goes through ``normalize(text)``, then
    the base's checks, the ``pattern`` (text bases) and ``check(value) -> message | None``; a refusal
    shows ``message`` (or what ``check`` returned) under the field. The types belong to the app
    whose plugins declare them: a dictionary using a type no enabled plugin declares is invalid
    ("'x' is not one of [...]"). A name that is a built-in type's or another plugin's stops the
    app with a message naming both plugins. The built-in types themselves come through this hook
    from ``crm_meta.builtin``.
    """


@hookspec
def crm_register_views(appbuilder: Any, build: Any) -> None:
    """Add screens, REST endpoints or menu items.

    When: once per app in ``create_app``, inside an app context, after the generated entity screens
    and APIs are registered and before permissions are synchronised.
    Arguments: ``appbuilder`` — the Flask-AppBuilder ``AppBuilder`` (call ``add_view``,
    ``add_view_no_menu``, ``add_api``, ``add_link``); ``build`` — the ``crm_meta.web.context.Build``
    of this app (``build.models``, ``build.registry``, ``build.db.session``, ``build.plugins``).
    Permissions: a view protected with ``has_access``/``protect`` keeps FAB's checks; reuse an
    entity's permission set with ``class_permission_name = "<entity>"`` and
    ``method_permission_name = {"<method>": "read"}``, or declare your own ``base_permissions`` —
    they are created and granted to the admin role at start-up like the generated ones.
    Returns: nothing.
    """


@hookspec
def crm_cli_commands() -> Iterable[click.Command]:
    """Commands to add under ``flask --app app crm``.

    When: at start-up (collected once per app); the commands are looked up when the CLI runs.
    Arguments: none.
    Returns: a list of ``click.Command`` objects (e.g. functions decorated with ``@click.command``;
    use ``flask.cli.with_appcontext`` or ``current_app`` inside). A name that clashes with a built-in
    ``crm`` command or another plugin's command stops the app with a message naming the plugin.
    """


@hookspec
def crm_dashboard_widgets() -> Iterable[Widget]:
    """Boxes for the dashboard on the index page (``/``).

    When: at start-up (collected once per app); each widget's ``render`` runs when a signed-in user
    opens the dashboard.
    Arguments: none.
    Returns: a list of ``crm_meta.plugins.Widget(name, label, render, entity=None, order=100)`` (or
    dicts with those keys). ``render(build, actor) -> str`` returns trusted HTML: escape any data
    with ``markupsafe.escape``. With ``entity`` set, the widget is shown only to users who may read
    that entity. ``label`` is a text or ``{"zh": ..., "en": ...}``. A widget that raises is shown as
    an error box naming its plugin; the rest of the page still renders.
    """


@hookspec
def crm_scheduled_jobs() -> Iterable[Job | tuple[str, Any, Callable[..., Any]]]:
    """Periodic jobs, run by ``flask --app app crm jobs run [NAME]`` (call it from cron).

    When: collected at start-up; ``crm jobs run`` runs each job whose interval has passed since its
    last run (or the named job, due or not), each in its own transaction.
    Arguments: none.
    Returns: a list of ``(name, interval, callable)`` tuples or ``crm_meta.plugins.Job`` objects:
    ``name`` an identifier unique across plugins, ``interval`` a ``datetime.timedelta`` or seconds,
    ``callable(build)`` does the work (``build.db.session`` is committed after it returns, rolled
    back when it raises) and may return a short text that is printed.
    """


# -- record events --------------------------------------------------------------------------------

@hookspec
def crm_before_create(entity: str, data: dict[str, Any], actor: Actor, session: Session) -> None:
    """A record is about to be created.

    When: in ``RecordService.create`` after the values passed validation (defaults applied), before
    the row is inserted; same transaction.
    Arguments: ``entity`` — the entity name (e.g. ``"contact"``); ``data`` — the validated values by
    field name (Python values: ``date``, ``Decimal``, dictionary codes, ids of referenced records,
    lists for multi-valued fields); a hook may change or add values, which are stored as given;
    ``actor`` — ``Actor(user_id, lang)`` of the user acting (``user_id`` None for the system);
    ``session`` — the SQLAlchemy session of the change.
    Returns: nothing; raise ``HookRefused(message)`` to refuse.
    """


@hookspec
def crm_after_create(entity: str, record: Any, actor: Actor, session: Session) -> None:
    """A record was created (inserted and flushed, not yet committed).

    When: in ``RecordService.create`` right after the INSERT, before the caller commits.
    Arguments: ``entity`` — the entity name; ``record`` — the new mapped object (``record.id``,
    auto-numbers and stamps are set; ``record.__entity__`` is its metadata); ``actor``; ``session``.
    Writes made through ``session`` belong to the same transaction.
    Returns: nothing; an exception rolls the insert back.
    """


@hookspec
def crm_before_update(entity: str, record: Any, changes: dict[str, tuple[Any, Any]], actor: Actor,
                      session: Session) -> None:
    """A record is about to be changed.

    When: in ``RecordService.update`` after the version check and validation, before any value is
    assigned; ``record`` still holds the stored values.
    Arguments: ``entity``; ``record``; ``changes`` — ``{field name: (old value, new value)}`` for the
    fields whose value changes (may be empty: a save without changes still counts as an update);
    ``actor``; ``session``.
    Returns: nothing; raise ``HookRefused(message)`` to refuse (the record stays unchanged).
    """


@hookspec
def crm_after_update(entity: str, record: Any, changes: dict[str, tuple[Any, Any]], actor: Actor,
                     session: Session) -> None:
    """A record was changed (UPDATE flushed, not yet committed).

    When: in ``RecordService.update`` right after the UPDATE, before the caller commits.
    Arguments: ``entity``; ``record`` — now holding the new values and version; ``changes`` —
    ``{field name: (old value, new value)}`` as given to ``crm_before_update``; ``actor``; ``session``.
    Returns: nothing; an exception rolls the change back.
    """


@hookspec
def crm_before_delete(entity: str, record: Any, actor: Actor, session: Session) -> None:
    """A record is about to be deleted.

    When: in ``RecordService.delete`` after the version check, before the DELETE.
    Arguments: ``entity``; ``record`` — the record, still stored; ``actor``; ``session``.
    Returns: nothing; raise ``HookRefused(message)`` to refuse (the record stays).
    """


@hookspec
def crm_after_delete(entity: str, record: Any, actor: Actor, session: Session) -> None:
    """A record was deleted (DELETE flushed, not yet committed).

    When: in ``RecordService.delete`` right after the DELETE, before the caller commits.
    Arguments: ``entity``; ``record`` — the deleted object (its attributes are still readable);
    ``actor``; ``session``.
    Returns: nothing; an exception rolls the delete back.
    """


@hookspec
def crm_before_transition(entity: str, record: Any, field: str, source: str | None, target: str, actor: Actor,
                          session: Session) -> None:
    """A pipeline field (stage, status) is about to move.

    When: in ``crm_meta.services.pipelines.transition`` after the move was found allowed for the
    user and its requirements are met, before the record is written; same transaction.
    Arguments: ``entity``; ``record`` — still holding the old state; ``field`` — the pipeline's
    field (e.g. ``"stage"``); ``source`` / ``target`` — the state codes; ``actor``; ``session``.
    Returns: nothing; raise ``HookRefused(message)`` to refuse (nothing changes).
    """


@hookspec
def crm_after_transition(entity: str, record: Any, field: str, source: str | None, target: str, actor: Actor,
                         session: Session) -> None:
    """A pipeline field moved (record written, status history stored, not yet committed).

    When: at the end of ``crm_meta.services.pipelines.transition``, after ``crm_after_update``.
    Arguments: as ``crm_before_transition``; ``record`` holds the new state and version.
    Returns: nothing; an exception rolls the whole move back.
    """
