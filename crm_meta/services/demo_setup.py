"""`crm init --demo`: demo users in roles and departments, then the data — only into an empty CRM."""
from __future__ import annotations

import os
import secrets

from flask import current_app
from sqlalchemy import func, select

# username, given name, family name, role, department, manages it, owns demo records
# (the service department's people own most demo tickets, as the feedback_service assignment rule
# would have made them)
DEMO_USERS = [
    ("zhangwei", "伟", "张", "sales_manager", "sales", True, True),
    ("wangfang", "芳", "王", "sales_rep", "sales_east", False, True),
    ("lina", "娜", "李", "sales_rep", "sales_east", False, True),
    ("liuyang", "洋", "刘", "sales_rep", "sales_south", False, True),
    ("yangtao", "涛", "杨", "sales_rep", "sales_south", False, True),
    ("chenjing", "静", "陈", "service", "service", True, False),
    ("zhaomin", "敏", "赵", "marketing", "marketing", True, False),
    ("sunli", "丽", "孙", "operations", "operations", True, False),
    ("zhoujie", "杰", "周", "auditor", "operations", False, False),
]
DEMO_OWNERS = [(u, first, last) for u, first, last, *_rest, owns in DEMO_USERS if owns]


def demo_password() -> str:
    """CRM_DEMO_PASSWORD lets people sign in as the demo users; otherwise each gets an unguessable one."""
    return os.environ.get("CRM_DEMO_PASSWORD") or secrets.token_urlsafe(16)


def ensure_demo_users() -> tuple[list[int], list[int]]:
    """Create the demo users (role + department) that are missing; the ids of those owning records
    and of those in the service department (who handle the demo's feedback tickets)."""
    from crm_meta.services.members import set_member
    from crm_meta.web.context import build

    b = build()
    sm = current_app.appbuilder.sm
    has_departments = b.registry.has_dictionary("department")
    owners, handlers = [], []
    for username, first, last, role_name, department, manager, owns in DEMO_USERS:
        role = sm.find_role(role_name) or sm.find_role(current_app.config["AUTH_ROLE_ADMIN"])
        user = sm.find_user(username=username)
        if user is None:
            user = sm.add_user(username, first, last, f"{username}@demo.invalid", role, demo_password())
        if has_departments and b.registry.dictionary("department").item(department) is not None:
            set_member(b.db.session, b.registry, b.models.system["member"], user.id, department, manager)
        if owns:
            owners.append(user.id)
        if department == "service":
            handlers.append(user.id)
    b.db.session.commit()
    return owners, handlers


def load_demo_once(customers: int = 300) -> dict[str, int] | None:
    """Load demo data unless customers exist already; returns the counts, or None when skipped."""
    from crm_meta.services.demo import load_demo
    from crm_meta.web.context import build

    b = build()
    session = b.db.session
    customer = b.models.model("customer")
    if session.execute(select(func.count()).select_from(customer)).scalar_one():
        return None
    owners, handlers = ensure_demo_users()
    return load_demo(session, b.models, owners, customers=customers, ticket_owner_ids=handlers)
