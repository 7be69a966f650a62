"""crm_meta.schema and crm_meta.metadata stay pure: no web framework, no ORM, not even indirectly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("flask", "flask_appbuilder", "sqlalchemy", "wtforms", "marshmallow")

PROBE = f"""
import json, sys
import crm_meta.schema, crm_meta.metadata, crm_meta.metadata.build
from crm_meta.schema import load_registry
registry = load_registry([{str(ROOT / "schemas")!r}])
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
print(json.dumps({{"entities": len(registry.entities), "loaded": loaded}}))
"""


def test_schema_and_metadata_import_no_web_or_database_library() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["entities"] > 0  # the probe really built the default dictionary
    assert result["loaded"] == [], f"imported by crm_meta.schema / crm_meta.metadata: {result['loaded']}"
