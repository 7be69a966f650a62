"""`crm init --demo`: owners for the demo data, then the data itself — only into an empty CRM."""
from __future__ import annotations

import secrets

from flask import current_app
from sqlalchemy import func, select

DEMO_OWNERS = [
    ("zhangwei", "伟", "张"), ("wangfang", "芳", "王"), ("lina", "娜", "李"),
    ("liuyang", "洋", "刘"), ("chenjing", "静", "陈"), ("yangtao", "涛", "杨"),
]


def load_demo_once(customers: int = 300) -> dict[str, int] | None:
    """Load demo data unless customers exist already; returns the counts, or None when skipped."""
    from crm_meta.services.demo import load_demo
    from crm_meta.web.context import build

    b = build()
    session = b.db.session
    customer = b.models.model("customer")
    if session.execute(select(func.count()).select_from(customer)).scalar_one():
        return None
    sm = current_app.appbuilder.sm
    role = sm.find_role(current_app.config["AUTH_ROLE_ADMIN"])
    owners = []
    for username, first, last in DEMO_OWNERS:
        user = sm.find_user(username=username)
        if user is None:
            # Demo owners get an unguessable password; an admin sets a real one when needed.
            user = sm.add_user(username, first, last, f"{username}@demo.invalid", role, secrets.token_urlsafe(16))
        owners.append(user.id)
    return load_demo(session, b.models, owners, customers=customers)
