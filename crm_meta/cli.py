"""`flask --app app crm …` commands (registered as a Flask command entry point)."""
from __future__ import annotations

import os
import secrets
import sys

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo, pass_script_info

from crm_meta.errors import SchemaErrors

crm = AppGroup("crm", help="The CRM's own commands: check the data dictionary, initialise the database.")


def _config_without_app() -> dict:
    """Config as create_app would see it, without building the app (for `crm check`)."""
    from flask import Flask

    from crm_meta.settings import PROJECT_ROOT, configure

    app = Flask("crm_meta.check", instance_path=str(PROJECT_ROOT / "instance"))
    configure(app, {"SECRET_KEY": "unused-by-check", "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    return app.config


@crm.command("check", with_appcontext=False)
@click.argument("paths", nargs=-1)
def check(paths: tuple[str, ...]) -> None:
    """Validate the data dictionary; print every error as path:line:col: message."""
    from crm_meta.schema import load_registry
    from crm_meta.settings import schema_paths

    targets = list(paths) or schema_paths(_config_without_app())
    try:
        registry = load_registry(targets)
    except SchemaErrors as exc:
        click.echo(exc.report(), err=True)
        click.echo(f"{len(exc.issues)} error(s) in the data dictionary", err=True)
        sys.exit(1)
    fields = sum(len(e.user_fields) for e in registry.entities)
    click.echo(f"ok: {len(registry.entities)} entities, {fields} fields, "
               f"{len(registry.dictionaries)} dictionaries ({', '.join(targets)})")


def ensure_admin(password: str | None = None) -> tuple[str, str] | None:
    """Create the first admin when there is no user; returns (username, password shown once)."""
    sm = current_app.appbuilder.sm
    if sm.count_users() > 0:
        return None
    generated = not (password or os.environ.get("CRM_ADMIN_PASSWORD") or
                     current_app.config.get("CRM_ADMIN_PASSWORD"))
    password = password or os.environ.get("CRM_ADMIN_PASSWORD") or current_app.config.get("CRM_ADMIN_PASSWORD") \
        or secrets.token_urlsafe(12)
    role = sm.find_role(current_app.config["AUTH_ROLE_ADMIN"])
    user = sm.add_user("admin", "管理员", "系统", "admin@crm.invalid", role, password)
    if not user:
        raise click.ClickException("could not create the admin user")
    return "admin", (password if generated else "(from CRM_ADMIN_PASSWORD)")


@crm.command("init")
@click.option("--demo", is_flag=True, help="Load demo data when the database has no customers yet.")
@click.option("--customers", default=300, show_default=True, help="How many demo customers.")
def init(demo: bool, customers: int) -> None:
    """Create or migrate the database, the first admin and (optionally) demo data; safe to repeat."""
    created = ensure_admin()
    if created:
        click.echo(f"Admin account created — user: {created[0]}  password: {created[1]}")
        click.echo("The password is shown only this once; change it under Security → List Users.")
    if demo:
        from crm_meta.services.demo_setup import load_demo_once

        counts = load_demo_once(customers)
        if counts:
            click.echo("Demo data loaded: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        else:
            click.echo("Demo data already present; left as it is.")
    click.echo(f"Database ready: {current_app.config['SQLALCHEMY_DATABASE_URI']}")


@crm.command("create-user")
@click.argument("username")
@click.option("--role", default="admin", show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--email", default=None)
def create_user(username: str, role: str, password: str, email: str | None) -> None:
    """Add a user with one role."""
    sm = current_app.appbuilder.sm
    found = sm.find_role(role)
    if found is None:
        raise click.ClickException(f"no role named {role!r}")
    if not sm.add_user(username, username, "", email or f"{username}@crm.invalid", found, password):
        raise click.ClickException("could not create the user (is the name or email taken?)")
    click.echo(f"user {username} created with role {role}")
