"""Which department each user belongs to (and whether they manage it)."""
from __future__ import annotations

from sqlalchemy import column, select, table
from sqlalchemy.orm import Session

from crm_meta.metadata.model import DEPARTMENT_DICTIONARY, Registry


class UnknownDepartment(ValueError):
    pass


def set_member(session: Session, registry: Registry, member_table, user_id: int, department: str,
               manager: bool = False) -> None:
    """Put a user in ``department`` (an active code of the `department` dictionary as stored — admins
    add departments on the data dictionary screen); no commit."""
    if not registry.has_dictionary(DEPARTMENT_DICTIONARY):
        raise UnknownDepartment(f"unknown department {department!r} (no department dictionary)")
    stored = table("crm_dict_item", column("dictionary"), column("code"), column("active"))
    codes = list(session.execute(select(stored.c.code).where(stored.c.dictionary == DEPARTMENT_DICTIONARY,
                                                             stored.c.active.is_(True))).scalars())
    codes = codes or [i.code for i in registry.dictionary(DEPARTMENT_DICTIONARY).items if i.active]
    if department not in codes:
        raise UnknownDepartment(f"unknown department {department!r} (known: {', '.join(sorted(codes))})")
    found = session.execute(select(member_table.c.user_id).where(member_table.c.user_id == user_id)).first()
    if found:
        session.execute(member_table.update().where(member_table.c.user_id == user_id)
                        .values(department=department, is_manager=manager))
    else:
        session.execute(member_table.insert().values(user_id=user_id, department=department, is_manager=manager))


def department_tree(session: Session, dict_item) -> dict[str, str | None]:
    """code → parent code of the `department` dictionary's items as stored (``attrs.parent``)."""
    rows = session.execute(select(dict_item.c.code, dict_item.c.attrs)
                           .where(dict_item.c.dictionary == DEPARTMENT_DICTIONARY))
    return {code: (attrs or {}).get("parent") for code, attrs in rows}


def department_of(session: Session, member_table, user_id: int) -> str | None:
    return session.execute(select(member_table.c.department).where(member_table.c.user_id == user_id)).scalar()
