"""The OpenAPI document shows each caller only what they may use: the entities they may read, the
operations their roles allow and the fields they may see (FAB documents everything to everyone)."""
from __future__ import annotations

import functools
import re

from flask import Flask, jsonify

from crm_meta.web import context
from crm_meta.web.views import class_name

ENDPOINT = "OpenApi.get"


def _action(path_rest: str, method: str) -> str:
    if method == "get":
        return "export" if path_rest == "export" else "read"
    if method == "post":
        return "reveal" if path_rest.endswith("/reveal") else "create"
    return {"put": "update", "delete": "delete"}.get(method, "read")


def filter_spec(spec: dict, policy, registry, prefix: str = "/api/v1/") -> dict:
    entities = {e.name: e for e in registry.entities}
    paths = {}
    for path, item in (spec.get("paths") or {}).items():
        m = re.match(rf"^{re.escape(prefix)}([a-z][a-z0-9_]*)/(.*)$", path)
        if not m or m.group(1) not in entities:
            paths[path] = item
            continue
        entity, rest = m.group(1), m.group(2).strip("/")
        kept = {method: op for method, op in item.items()
                if method not in ("get", "post", "put", "delete", "patch") or policy.can(entity, _action(rest, method))}
        if any(k in ("get", "post", "put", "delete", "patch") for k in kept):
            paths[path] = kept
    schemas = dict((spec.get("components") or {}).get("schemas") or {})
    for entity in entities.values():
        api = class_name(entity, "Api")
        access = policy.access(entity.name)
        for name in [n for n in schemas if n == api or n.startswith(api + ".")]:
            if not access.can("read"):
                del schemas[name]
                continue
            schema = dict(schemas[name])
            props = {k: v for k, v in (schema.get("properties") or {}).items() if k not in access.hidden}
            schema["properties"] = props
            if "required" in schema:
                schema["required"] = [r for r in schema["required"] if r in props]
            schemas[name] = schema
    out = dict(spec)
    out["paths"] = paths
    if "components" in out:
        out["components"] = {**out["components"], "schemas": schemas}
    return out


def scope_openapi(app: Flask) -> None:
    """Wrap FAB's OpenAPI endpoint (authentication unchanged) with the caller's filter."""
    original = app.view_functions.get(ENDPOINT)
    if original is None:
        return

    @functools.wraps(original)
    def scoped(*args, **kwargs):
        resp = original(*args, **kwargs)
        if getattr(resp, "status_code", 200) != 200:
            return resp
        return jsonify(filter_spec(resp.get_json(), context.policy(), context.build().registry))

    app.view_functions[ENDPOINT] = scoped
