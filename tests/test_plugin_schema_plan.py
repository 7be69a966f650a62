"""A plugin's dictionary files go through the same plan and apply as ``schemas/``.

The database is created without the example plugin; with the plugin turned on, `crm schema plan`
lists the columns its `extend:` adds (changing nothing), `crm schema apply` adds them, drift is clean,
and the CRM then serves the plugin's field. Turning the plugin off again plans the drop as a
destructive step — refused unless allowed.
"""
from __future__ import annotations

from flask import Flask
from sqlalchemy import create_engine, inspect

from crm_meta.cli import crm


def _cli(config: dict, instance, *args: str):
    app = Flask("crm_meta.test_plugin_schema_plan", instance_path=str(instance))
    app.config.update(config)
    with app.app_context():
        return app.test_cli_runner().invoke(crm, ["schema", *args])


def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_a_plugins_schema_is_planned_and_applied_like_the_rest(make_app, db_url, tmp_path):
    plain = make_app()  # the example plugin is opt-in: not enabled here
    assert "wechat" not in _columns(db_url, "contact")
    config = {k: v for k, v in plain.config.items()}
    config["CRM_PLUGINS"] = "crm_birthday,crm_lifecycle"

    planned = _cli(config, tmp_path / "i1", "plan")
    assert planned.exit_code == 0, planned.output
    assert "add column contact.birthday_reminder" in planned.output, planned.output
    assert "add column contact.wechat VARCHAR(20)" in planned.output, planned.output  # the plugin's own type
    assert "[safe]" in planned.output and "destructive" not in planned.output.split("\n")[0].replace(
        "0 destructive", "")
    assert "wechat" not in _columns(db_url, "contact")  # plan changes nothing

    applied = _cli(config, tmp_path / "i1", "apply")
    assert applied.exit_code == 0, applied.output
    assert {"wechat", "birthday_reminder"} <= _columns(db_url, "contact")
    drift = _cli(config, tmp_path / "i1", "drift")
    assert drift.exit_code == 0, drift.output

    # Off again: its columns would be dropped — a destructive step, refused without the flag.
    off = dict(config, CRM_PLUGINS="crm_lifecycle")
    again = _cli(off, tmp_path / "i2", "plan")
    assert again.exit_code == 0 and "drop column contact.wechat" in again.output, again.output
    refused = _cli(off, tmp_path / "i2", "apply")
    assert refused.exit_code == 1 and "could lose data" in refused.output, refused.output
    assert "wechat" in _columns(db_url, "contact")
