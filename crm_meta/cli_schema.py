"""`flask --app app crm schema plan|apply|drift|export|import` — the same service the schema screens use.

These commands do not build the app (building it would apply safe changes at start-up, and refuse to
start on destructive ones): they read the configuration, open the database and work on the dictionary
(YAML under CRM_SCHEMA_PATH and the enabled plugins' files, plus the stored overlay).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import current_app

from crm_meta.errors import CrmError, SchemaErrors


@click.group("schema")
def schema() -> None:
    """Plan and apply data dictionary changes; check drift; export/import the admins' overlay."""


def _service():
    """(SchemaChanges, engine) for the configured database."""
    from flask import Flask
    from flask_appbuilder.security.sqla.models import User
    from sqlalchemy import create_engine

    import crm_meta.db.engine  # noqa: F401  (SQLite pragmas on every connection)
    from crm_meta.plugins import load_plugins
    from crm_meta.services.schema_changes import SchemaChanges
    from crm_meta.settings import PROJECT_ROOT, configure

    if current_app:
        config, instance = current_app.config, Path(current_app.instance_path)
    else:
        app = Flask("crm_meta.schema", instance_path=str(PROJECT_ROOT / "instance"))
        configure(app, None)
        config, instance = app.config, Path(app.instance_path)
    engine = create_engine(config["SQLALCHEMY_DATABASE_URI"], **config.get("SQLALCHEMY_ENGINE_OPTIONS", {}))
    return SchemaChanges.for_config(engine, config, load_plugins(config), instance, User), engine


def _fail(exc: Exception) -> None:
    text = exc.report() if isinstance(exc, SchemaErrors) else str(exc)
    click.echo(text, err=True)
    if isinstance(exc, SchemaErrors):
        click.echo(f"{len(exc.issues)} error(s) in the data dictionary; nothing was changed", err=True)
    sys.exit(1)


@schema.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(as_json: bool) -> None:
    """Print what the dictionary (YAML + overlay) would change in the database: each step safe or destructive,
    what destructive steps would lose, what blocks a step, and budget warnings. Changes nothing."""
    service, engine = _service()
    try:
        outcome = service.plan()
    except (SchemaErrors, CrmError) as exc:
        _fail(exc)
    finally:
        engine.dispose()
    click.echo(json.dumps(outcome.plan.as_dict(), ensure_ascii=False, indent=2) if as_json
               else outcome.plan.report())
    if outcome.plan.changes and not as_json:
        hint = " --allow-destructive" if outcome.plan.destructive else ""
        click.echo(f"Apply with: flask --app app crm schema apply{hint}")


@schema.command("apply")
@click.option("--allow-destructive", is_flag=True, help="Also run steps that lose data (a backup is taken first).")
def apply_command(allow_destructive: bool) -> None:
    """Apply the plan: safe steps always, destructive ones only with --allow-destructive. All or nothing."""
    service, engine = _service()
    try:
        outcome = service.apply(allow_destructive=allow_destructive)
    except (SchemaErrors, CrmError) as exc:
        _fail(exc)
    finally:
        engine.dispose()
    if outcome.backup:
        click.echo(f"backup: {outcome.backup}")
    click.echo(outcome.plan.report())
    click.echo(f"applied; schema generation {outcome.generation} (running workers switch on their next request)")


@schema.command("drift")
def drift_command() -> None:
    """Compare the stored schema snapshot with the live database (and list pending dictionary changes);
    exit 1 on any difference."""
    service, engine = _service()
    try:
        problems = service.drift()
    except (SchemaErrors, CrmError) as exc:
        _fail(exc)
    finally:
        engine.dispose()
    if problems:
        for line in problems:
            click.echo(line)
        click.echo(f"{len(problems)} difference(s)", err=True)
        sys.exit(1)
    click.echo("no drift: the database matches the stored snapshot and the data dictionary")


@schema.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
def export_command(directory: str) -> None:
    """Write the admins' overlay (custom fields, entities, edited dictionary items) as YAML into DIRECTORY."""
    from crm_meta.schema.overlay import export_overlay
    from crm_meta.services.schema_changes import dictionary_items_text

    service, engine = _service()
    try:
        with engine.connect() as conn:
            from crm_meta.services.schema_changes import read_overlay

            overlay = read_overlay(conn)
            items = dictionary_items_text(conn)
    finally:
        engine.dispose()
    files = export_overlay(overlay, directory, items)
    for path in files:
        click.echo(f"wrote {path}")
    if not files:
        click.echo("the overlay is empty: admins have not changed the model on screen")


@schema.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--allow-destructive", is_flag=True, help="Allow steps that lose data (a backup is taken first).")
def import_command(directory: str, allow_destructive: bool) -> None:
    """Replace the overlay with the YAML in DIRECTORY (as written by `schema export`) and apply it."""
    service, engine = _service()
    try:
        outcome = service.import_directory(directory, allow_destructive=allow_destructive)
    except (SchemaErrors, CrmError) as exc:
        _fail(exc)
    finally:
        engine.dispose()
    click.echo(outcome.plan.report())
    click.echo(f"imported {len(outcome.overlay.fields)} custom field(s), {len(outcome.overlay.entities)} "
               f"entit(ies); schema generation {outcome.generation}")
