"""A restart with an unchanged dictionary does not load the schema-change machinery: Alembic (about
70 ms of a 0.2 s build, bench/startup.py) is imported only when a migration or a plan is made."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys
from crm_meta.web.factory import create_app
config = {"SQLALCHEMY_DATABASE_URI": "sqlite:///%(db)s", "INSTANCE_PATH": "%(dir)s", "SECRET_KEY": "test-startup",
          "CRM_SCHEMA_PATH": "%(schemas)s"}
app = create_app(config)
print("ALEMBIC", "alembic" in sys.modules, "PLAN", "crm_meta.db.plan" in sys.modules)
"""


def boot(tmp_path: Path) -> str:
    code = CHILD % {"db": tmp_path / "app.db", "dir": tmp_path, "schemas": ROOT / "schemas"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return next(line for line in out.stdout.splitlines() if line.startswith("ALEMBIC"))


def test_second_boot_does_not_import_alembic(tmp_path):
    boot(tmp_path)  # first boot: creates the tables
    assert boot(tmp_path) == "ALEMBIC False PLAN False"
