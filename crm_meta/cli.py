"""`flask --app app crm …` commands (registered as a Flask command entry point)."""
from __future__ import annotations

import os
import secrets
import sys

import click
from flask import current_app
from flask.cli import AppGroup, NoAppException, ScriptInfo, pass_script_info

from crm_meta.errors import PluginError, SchemaErrors


class CrmGroup(AppGroup):
    """``flask crm``: the built-in commands, plus the commands of the app's plugins (``crm_cli_commands``).

    Plugin commands are per app: they are looked up in the app being run, not registered globally.
    """

    def _plugin_commands(self, ctx: click.Context) -> dict:
        app = current_app._get_current_object() if current_app else ctx.ensure_object(ScriptInfo).load_app()
        return app.extensions["crm"].plugins.commands

    def get_command(self, ctx: click.Context, cmd_name: str):
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        try:
            commands = self._plugin_commands(ctx)
        except NoAppException:  # no app to ask; an app that cannot start exits with its message
            return None
        found = commands.get(cmd_name)
        if found is not None and not current_app:  # run plugin commands inside the app, like built-ins
            ctx.with_resource(ctx.ensure_object(ScriptInfo).load_app().app_context())
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        try:
            names |= set(self._plugin_commands(ctx))
        except Exception:  # noqa: BLE001 - help still lists the built-ins when the app cannot start
            pass
        except SystemExit:
            pass
        return sorted(names)


crm = CrmGroup("crm", help="The CRM's own commands (check the data dictionary, initialise the database, "
                           "plugins, jobs) and those of its plugins.")


from crm_meta.cli_schema import schema as _schema  # noqa: E402

crm.add_command(_schema)


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
    """Validate the data dictionary (with the enabled plugins' files); print every error as path:line:col: message."""
    from crm_meta.plugins import Plugins, load_plugins
    from crm_meta.schema import load_registry
    from crm_meta.settings import schema_paths

    plugins = Plugins()
    if paths:
        targets = list(paths)
        # the enabled plugins' field types are known (a broken plugin is not this check's business)
        plugins = load_plugins(_config_without_app(), strict=False)
    else:
        config = _config_without_app()
        try:
            plugins = load_plugins(config)
        except PluginError as exc:
            click.echo(f"crm_meta: {exc}", err=True)
            sys.exit(1)
        targets = schema_paths(config) + [str(p) for p in plugins.schema_paths()]
    try:
        registry = load_registry(targets, field_types=_field_types(plugins))
    except SchemaErrors as exc:
        from crm_meta.web.factory import plugin_blame

        click.echo(exc.report(), err=True)
        for line in plugin_blame(plugins, exc):
            click.echo(line, err=True)
        click.echo(f"{len(exc.issues)} error(s) in the data dictionary", err=True)
        sys.exit(1)
    fields = sum(len(e.user_fields) for e in registry.entities)
    click.echo(f"ok: {len(registry.entities)} entities, {fields} fields, "
               f"{len(registry.dictionaries)} dictionaries ({', '.join(targets)})")


def _field_types(plugins):
    """The field types of the enabled plugins (the built-in ones when they cannot be collected)."""
    try:
        return plugins.field_types()
    except PluginError as exc:
        click.echo(f"crm_meta: {exc}", err=True)
        sys.exit(1)


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
@click.option("--department", default=None, help="Department code (the `department` dictionary).")
@click.option("--manager", is_flag=True, help="The user manages that department.")
def create_user(username: str, role: str, password: str, email: str | None, department: str | None,
                manager: bool) -> None:
    """Add a user with one role (the password must pass the password policy)."""
    from crm_meta.web.auth import password_message, password_problems

    problems = password_problems(password, username)
    if problems:
        click.echo(f"password refused: {password_message(problems)}", err=True)
        sys.exit(1)
    sm = current_app.appbuilder.sm
    found = sm.find_role(role)
    if found is None:
        raise click.ClickException(f"no role named {role!r}")
    b = current_app.extensions["crm"]
    if department is not None:
        from crm_meta.metadata.model import DEPARTMENT_DICTIONARY

        dictionary = b.registry.dictionary(DEPARTMENT_DICTIONARY) if b.registry.has_dictionary(
            DEPARTMENT_DICTIONARY) else None
        if dictionary is None or dictionary.item(department) is None:
            known = ", ".join(i.code for i in dictionary.items) if dictionary else "none"
            raise click.ClickException(f"unknown department {department!r} (known: {known})")
    user = sm.add_user(username, username, "", email or f"{username}@crm.invalid", found, password)
    if not user:
        raise click.ClickException("could not create the user (is the name or email taken?)")
    if department is not None:
        from crm_meta.services.members import set_member

        set_member(b.db.session, b.registry, b.models.system["member"], user.id, department, manager)
        b.db.session.commit()
    click.echo(f"user {username} created with role {role}" + (f" in {department}" if department else ""))


@crm.command("member")
@click.argument("username")
@click.argument("department")
@click.option("--manager", is_flag=True, help="The user manages that department.")
def member_command(username: str, department: str, manager: bool) -> None:
    """Put a user in a department (a code of the `department` dictionary)."""
    from crm_meta.services.members import UnknownDepartment, set_member

    user = current_app.appbuilder.sm.find_user(username=username)
    if user is None:
        raise click.ClickException(f"no user named {username!r}")
    b = current_app.extensions["crm"]
    try:
        set_member(b.db.session, b.registry, b.models.system["member"], user.id, department, manager)
    except UnknownDepartment as exc:
        raise click.ClickException(str(exc)) from None
    b.db.session.commit()
    click.echo(f"{username} is now in {department}" + (" as its manager" if manager else ""))


@crm.command("plugins", with_appcontext=False)
def plugins_command() -> None:
    """List the plugins: version, where they come from, enabled or not, hooks, dictionary files."""
    from crm_meta.plugins import load_plugins
    from crm_meta.schema.loader import display_path, schema_files

    if current_app:
        plugins = current_app.extensions["crm"].plugins
    else:
        plugins = load_plugins(_config_without_app(), strict=False)
    broken = False
    for info in plugins.infos:
        state = "error" if info.error else ("enabled" if info.enabled else "disabled")
        broken = broken or bool(info.error and info.enabled)
        click.echo(f"{info.name} {info.version or '-'}  [{state}]  {info.origin}")
        if info.reason:
            click.echo(f"    {info.reason}")
        if info.error:
            click.echo(f"    error: {info.error}")
        click.echo(f"    hooks: {', '.join(info.hooks) or '(none)'}")
        if info.enabled and not info.error and "crm_field_types" in info.hooks:
            try:
                added = [t for t in plugins.field_types().custom_types if t.plugin == info.name]
            except PluginError:
                added = []
            for t in added:
                click.echo(f"    field type: {t.name} ({t.base}{', ' + t.pattern if t.pattern else ''})")
        for path in info.schema_paths:
            files = schema_files([path]) if path.exists() else []
            for f in files:
                click.echo(f"    schema: {display_path(f)}")
            if not files:
                click.echo(f"    schema: {display_path(path)} (no *.yaml file there)")
    if broken:
        sys.exit(1)


@crm.group("jobs")
def jobs() -> None:
    """The plugins' periodic jobs; run `flask --app app crm jobs run` from cron (e.g. every 5 minutes)."""


def _jobs() -> dict:
    return current_app.extensions["crm"].plugins.jobs


@jobs.command("list")
def jobs_list() -> None:
    """Each job with its interval, plugin, last run and when it is due next."""
    from crm_meta.services.jobs import next_run, state_of

    b = current_app.extensions["crm"]
    if not _jobs():
        click.echo("no scheduled jobs (no enabled plugin contributes one)")
    for job in _jobs().values():
        state = state_of(b.db.session, b.models.system["state"], job.name)
        last = "never run" if state.started is None else (
            f"last run {state.started:%Y-%m-%d %H:%M} UTC " + ("ok" if state.ok else
                                                               "running" if state.ok is None else f"FAILED: {state.error}"))
        due = next_run(job, state)
        click.echo(f"{job.name}  every {job.interval}  ({job.plugin})  {last}; "
                   f"due {'now' if due is None else f'{due:%Y-%m-%d %H:%M} UTC'}")


@jobs.command("run")
@click.argument("name", required=False)
def jobs_run(name: str | None) -> None:
    """Run the due jobs once (or the job NAME, due or not); exit 1 when one failed."""
    from crm_meta.services.jobs import run_job

    b = current_app.extensions["crm"]
    if name is not None and name not in _jobs():
        raise click.ClickException(f"no job named '{name}' (jobs: {', '.join(_jobs()) or 'none'})")
    selected = [_jobs()[name]] if name else list(_jobs().values())
    failed = 0
    for job in selected:
        run = run_job(b.db.session, b.models.system["state"], job, b, force=name is not None)
        if not run.ran:
            click.echo(f"skipped {job.name} ({job.plugin}): {run.skipped}")
        elif run.ok:
            click.echo(f"ran {job.name} ({job.plugin}): ok" + (f" — {run.output}" if run.output else ""))
        else:
            failed += 1
            click.echo(f"FAILED {job.name} (plugin {job.plugin}): {run.output}", err=True)
    if failed:
        sys.exit(1)
