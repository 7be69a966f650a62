"""Validate dictionary files: structure with JSON Schema, then meaning (names, references, types).

Both passes run on every file that parsed, so one run reports as many independent problems as it
can; the meaning checks skip whatever the structure pass already found malformed.
"""
from __future__ import annotations

from typing import Any, Callable

from crm_meta.errors import SchemaIssue, SourceLocation
from crm_meta.metadata.fieldtypes import FieldTypes, field_types_of
from crm_meta.metadata.model import SYSTEM_FIELDS
from crm_meta.schema.fieldcheck import autonumber_problem, field_problems, field_type, is_name
from crm_meta.schema.loader import LoadedFile, one_line
from crm_meta.schema.reserved import reserved_reason
from crm_meta.schema.structure import IDENTIFIER, dotted, json_schema, structure_issues, suggest

SECTIONS = ("menus", "dictionaries", "entities", "roles", "pipelines")
SINGULAR = {"menus": "menu", "dictionaries": "dictionary", "entities": "entity", "roles": "role",
            "pipelines": "pipeline"}

PROCESS_ATTRS = {"cadence_days": "days", "response_hours": "hours", "resolve_hours": "hours"}
ESCALATE_VALUES = ("manager",)

__all__ = ["SECTIONS", "autonumber_problem", "json_schema", "meaning_issues", "structure_issues", "validate_files"]


class Declarations:
    """Every menu, dictionary and entity declared across the files, by name (first one wins)."""

    def __init__(self, files: list[LoadedFile]):
        self.first: dict[str, dict[str, tuple[LoadedFile, Any]]] = {s: {} for s in SECTIONS}
        self.all: list[tuple[str, str, LoadedFile, Any]] = []  # (section, name, file, body), repeats too
        self.extensions: list[tuple[str, LoadedFile, Any]] = []  # `extend:` entries (entity, file, body)
        # Sections where a declaration may be missing because a file or section did not parse:
        self.incomplete: set[str] = set(SECTIONS) if any(not f.parsed for f in files) else set()
        for f in files:
            if not f.parsed or not isinstance(f.data, dict):
                continue
            extend = f.data.get("extend")
            if isinstance(extend, dict):
                self.extensions += [(name, f, body) for name, body in extend.items()]
            for section in SECTIONS:
                declared = f.data.get(section)
                if not isinstance(declared, dict):
                    if declared is not None:
                        self.incomplete.add(section)
                    continue
                for name, body in declared.items():
                    if not IDENTIFIER.match(name):  # reported; what do references to it mean? cannot tell
                        self.incomplete.add(section)
                    self.all.append((section, name, f, body))
                    self.first[section].setdefault(name, (f, body))

    def known(self, section: str, name: str) -> bool | None:
        if name in self.first[section]:
            return True
        return None if section in self.incomplete else False

    def unknown(self, section: str, name: str) -> str:
        names = sorted(self.first[section])
        hint = suggest(name, names) or (f" (known: {', '.join(names)})" if names else f" (no {section} are declared)")
        return f"unknown {SINGULAR[section]} '{name}'{hint}"

    def _items(self, dictionary: str) -> list[dict] | None:
        body = self.first["dictionaries"].get(dictionary, (None, None))[1]
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return None
        return items

    def codes(self, dictionary: str) -> set[str] | None:
        items = self._items(dictionary)
        if items is None or not all(isinstance(i.get("code"), str) for i in items):
            return None
        return {i["code"] for i in items}

    def groups(self, dictionary: str) -> set[str] | None:
        items = self._items(dictionary)
        return None if items is None else {i["group"] for i in items if isinstance(i.get("group"), str)}


class _Checker:
    """Cross-file checks; each problem is recorded with the place it was declared."""

    def __init__(self, files: list[LoadedFile], types: FieldTypes | None = None):
        self.decls = Declarations(files)
        self.types = field_types_of(types)  # the app's field types (plugins may add some)
        self.issues: list[SchemaIssue] = []

    def add(self, f: LoadedFile, path: tuple, message: str, *, key: bool = False) -> None:
        self.issues.append(SchemaIssue(f.locate(path, key=key), dotted(path), one_line(message)))

    def run(self) -> list[SchemaIssue]:
        for section, name, f, body in self.decls.all:
            first = self.decls.first[section][name][0]
            if first is not f:
                where = first.locate((section, name), key=True)
                self.add(f, (section, name), f"{SINGULAR[section]} '{name}' is already declared at {where}", key=True)
            if section == "dictionaries":
                self.check_dictionary(f, name, body)
            elif section == "entities":
                self.check_entity(f, name, body)
            elif section == "roles":
                self.check_role(f, name, body)
            elif section == "pipelines":
                self.check_pipeline(f, name, body)
        for i, (name, f, body) in enumerate(self.decls.extensions):
            self.check_extension(i, f, name, body)
        self.check_departments()
        return self.issues

    def entity_fields(self, entity: str) -> dict | None:
        """An entity's fields, its own and those extensions add (None when it cannot be told)."""
        body = self.decls.first["entities"].get(entity, (None, None))[1]
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            return None
        fields = dict(body["fields"])
        for name, _f, ext in self.decls.extensions:
            if name == entity and isinstance(ext, dict) and isinstance(ext.get("fields"), dict):
                fields.update({k: v for k, v in ext["fields"].items() if k not in fields})
        return fields

    def check_role(self, f: LoadedFile, name: str, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("entities"), dict):
            return
        for entity, grant in body["entities"].items():
            path = ("roles", name, "entities", entity)
            if entity == "*" or not is_name(entity):
                fields = None
            elif self.decls.known("entities", entity) is False:
                self.add(f, path, self.decls.unknown("entities", entity), key=True)
                continue
            else:
                fields = self.entity_fields(entity)
            rules = grant.get("fields") if isinstance(grant, dict) else None
            for fname in rules if isinstance(rules, dict) else ():
                if entity == "*" and is_name(fname):
                    self.add(f, path + ("fields", fname), "field rules need a named entity, not '*'", key=True)
                elif fields is not None and is_name(fname) and fname not in fields:
                    self.add(f, path + ("fields", fname),
                             f"entity '{entity}' has no field '{fname}'{suggest(fname, fields)}", key=True)
            classes = grant.get("classes") if isinstance(grant, dict) else None
            for cname in classes if isinstance(classes, dict) else ():
                known = self.data_classes()
                if is_name(cname) and known is not None and cname not in known:
                    self.add(f, path + ("classes", cname), f"no field of the dictionary has the class '{cname}'"
                             f"{suggest(cname, known)}", key=True)

    def data_classes(self) -> set[str] | None:
        """Every class some field declares (None when a file could not be read)."""
        if not hasattr(self, "_classes"):
            found: set[str] = set()
            bodies = [b for _f, b in self.decls.first["entities"].values() if isinstance(b, dict)]
            bodies += [e for _n, _f, e in self.decls.extensions if isinstance(e, dict)]
            for body in bodies:
                for fbody in (body.get("fields") or {}).values() if isinstance(body.get("fields"), dict) else ():
                    if isinstance(fbody, dict) and isinstance(fbody.get("classes"), list):
                        found |= {c for c in fbody["classes"] if isinstance(c, str)}
            self._classes = found
        return self._classes

    def check_pipeline(self, f: LoadedFile, name: str, body: Any) -> None:
        """Entity, enum field, states of its dictionary, roles, fields, evidence; every state reachable."""
        base = ("pipelines", name)
        if not isinstance(body, dict):
            return
        entity = body.get("entity")
        if not is_name(entity):
            return
        if self.decls.known("entities", entity) is False:
            self.add(f, base + ("entity",), self.decls.unknown("entities", entity))
            return
        fields = self.entity_fields(entity)
        if fields is None:
            return
        fname = body.get("field")
        if not is_name(fname):
            return
        if fname not in fields:
            self.add(f, base + ("field",), f"entity '{entity}' has no field '{fname}'{suggest(fname, fields)}")
            return
        ftype = field_type(fields[fname], self.types)
        if ftype is None or ftype.name != "enum":
            self.add(f, base + ("field",), f"a pipeline governs an enum field; '{fname}' is "
                     f"{ftype.name if ftype else 'not a field'}")
            return
        dictionary = fields[fname].get("dictionary")
        states = self.decls.codes(dictionary) if is_name(dictionary) else None
        if states is None:
            return
        known_states = sorted(states)

        def state(path: tuple, code: Any) -> None:
            if isinstance(code, str) and code != "*" and code not in states:
                self.add(f, path, f"unknown state '{code}' (states of dictionary "
                         f"'{fields[fname].get('dictionary')}': {', '.join(known_states)}){suggest(code, states)}")

        initial = body.get("initial", fields[fname].get("default"))
        if initial is None:
            self.add(f, base, "the pipeline needs an `initial` state (or a `default` on its field)", key=True)
        else:
            state(base + ("initial",) if "initial" in body else base + ("field",), str(initial))
        edges: dict[str, set[str]] = {}
        transitions = body.get("transitions")
        for i, t in enumerate(transitions if isinstance(transitions, list) else []):
            if not isinstance(t, dict):
                continue
            path = base + ("transitions", i)
            src, dst = t.get("from"), t.get("to")
            state(path + ("to",), dst)
            sources = [s for s in states if s != dst] if src == "*" else ([src] if isinstance(src, str) else
                                                                          src if isinstance(src, list) else [])
            for j, s_ in enumerate(sources if isinstance(src, list) else []):
                state(path + ("from", j), s_)
            if isinstance(src, str):
                state(path + ("from",), src)
            for s_ in sources:
                if isinstance(s_, str) and isinstance(dst, str):
                    edges.setdefault(s_, set()).add(dst)
            for j, role in enumerate(t.get("roles") or []):
                if is_name(role) and self.decls.known("roles", role) is False:
                    self.add(f, path + ("roles", j), self.decls.unknown("roles", role))
            for key in ("requires",):
                for j, ref in enumerate(t.get(key) or []):
                    if is_name(ref) and ref not in fields:
                        self.add(f, path + (key, j), f"entity '{entity}' has no field '{ref}'{suggest(ref, fields)}")
            for ref in (t.get("set") or {}) if isinstance(t.get("set"), dict) else ():
                if is_name(ref) and ref not in fields:
                    self.add(f, path + ("set", ref), f"entity '{entity}' has no field '{ref}'{suggest(ref, fields)}",
                             key=True)
            if "follow_up" in t and entity != "customer":
                ref = fields.get("customer")
                if not (isinstance(ref, dict) and ref.get("type") == "reference" and ref.get("entity") == "customer"):
                    self.add(f, path + ("follow_up",), f"a follow-up task needs the record's customer: entity "
                             f"'{entity}' is not 'customer' and has no reference field 'customer' to it", key=True)
            for j, ev in enumerate(t.get("requires_one_of") or []):
                if isinstance(ev, str):
                    if is_name(ev) and ev not in fields:
                        self.add(f, path + ("requires_one_of", j),
                                 f"entity '{entity}' has no field '{ev}'{suggest(ev, fields)}")
                elif isinstance(ev, dict) and is_name(ev.get("related")):
                    rel = ev["related"]
                    if self.decls.known("entities", rel) is False:
                        self.add(f, path + ("requires_one_of", j, "related"), self.decls.unknown("entities", rel))
                        continue
                    rfields = self.entity_fields(rel) or {}
                    if rfields and not any(isinstance(b, dict) and b.get("type") == "reference"
                                           and b.get("entity") == entity for b in rfields.values()):
                        self.add(f, path + ("requires_one_of", j, "related"),
                                 f"entity '{rel}' has no reference field to '{entity}'")
                    for ref in (ev.get("where") or {}) if isinstance(ev.get("where"), dict) else ():
                        if rfields and ref not in rfields:
                            self.add(f, path + ("requires_one_of", j, "where", ref),
                                     f"entity '{rel}' has no field '{ref}'{suggest(ref, rfields)}", key=True)
        if isinstance(initial, str) and initial in states and edges:
            seen, todo = {initial}, [initial]
            while todo:
                for nxt in edges.get(todo.pop(), ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            unreachable = sorted(states - seen)
            if unreachable:
                self.add(f, base + ("transitions",), f"states not reachable from '{initial}': "
                         f"{', '.join(unreachable)} (add a transition into them, or remove them)")
        for other in self.decls.first["pipelines"].items():
            oname, (of, obody) = other
            if oname != name and isinstance(obody, dict) and obody.get("entity") == entity \
                    and obody.get("field") == fname and oname < name:
                self.add(f, base + ("field",), f"field '{entity}.{fname}' already has the pipeline '{oname}'")

    def check_departments(self) -> None:
        """The department dictionary is a tree: each item's ``attrs.parent`` names another item, no cycles."""
        found = self.decls.first["dictionaries"].get("department")
        items = self.decls._items("department")
        if not found or items is None:
            return
        f = found[0]
        parents = {i.get("code"): (i.get("attrs") or {}).get("parent") for i in items
                   if isinstance(i.get("code"), str) and isinstance(i.get("attrs") or {}, dict)}
        for n, item in enumerate(items):
            code = item.get("code")
            parent = parents.get(code)
            if parent is None:
                continue
            path = ("dictionaries", "department", "items", n, "attrs", "parent")
            if parent not in parents:
                self.add(f, path, f"unknown parent department '{parent}'{suggest(parent, parents)}")
                continue
            seen, at = {code}, parent
            while at is not None and at not in seen:
                seen.add(at)
                at = parents.get(at)
            if at == code:
                self.add(f, path, f"department '{code}' is its own ancestor (the departments must form a tree)")

    def check_process_attrs(self, f: LoadedFile, name: str, body: Any) -> None:
        """Item attrs the follow-up cadence and the ticket SLAs read (crm_meta/services/followups.py, sla.py)."""
        items = body.get("items") if isinstance(body, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            attrs = item.get("attrs") if isinstance(item, dict) else None
            if not isinstance(attrs, dict):
                continue
            path = ("dictionaries", name, "items", i, "attrs")
            for key, unit in PROCESS_ATTRS.items():
                if key not in attrs:
                    continue
                value = attrs[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                    self.add(f, path + (key,), f"{key} must be a positive number of {unit}, not {value!r}")
            hours = [attrs.get(k) for k in ("response_hours", "resolve_hours")]
            if all(isinstance(h, (int, float)) and not isinstance(h, bool) and h > 0 for h in hours) \
                    and hours[0] > hours[1]:
                self.add(f, path + ("response_hours",),
                         f"response_hours ({hours[0]}) is more than resolve_hours ({hours[1]})")
            if "escalate" in attrs and attrs["escalate"] not in ESCALATE_VALUES:
                self.add(f, path + ("escalate",), f"escalate must be {' or '.join(ESCALATE_VALUES)} (the dispatch "
                         f"department's manager), not {attrs['escalate']!r}")
            for key in ("responded", "resolved"):
                if key in attrs and not isinstance(attrs[key], bool):
                    self.add(f, path + (key,), f"{key} must be true or false, not {attrs[key]!r}")

    def check_dictionary(self, f: LoadedFile, name: str, body: Any) -> None:
        self.check_process_attrs(f, name, body)
        items = body.get("items") if isinstance(body, dict) else None
        seen: dict[str, int] = {}
        for i, item in enumerate(items if isinstance(items, list) else []):
            code = item.get("code") if isinstance(item, dict) else None
            if not isinstance(code, str):
                continue
            path = ("dictionaries", name, "items", i, "code")
            if code in seen:
                first = f.locate(("dictionaries", name, "items", seen[code], "code")).line
                self.add(f, path, f"code '{code}' is used twice in dictionary '{name}' (first at line {first})")
            seen.setdefault(code, i)

    def check_entity(self, f: LoadedFile, name: str, body: Any) -> None:
        base = ("entities", name)
        reason = reserved_reason(name, entity=True) if is_name(name) else None
        if reason:
            self.add(f, base, reason, key=True)
        if not isinstance(body, dict):
            return
        menu = body.get("menu")
        if is_name(menu) and self.decls.known("menus", menu) is False:
            self.add(f, base + ("menu",), self.decls.unknown("menus", menu))
        fields = body.get("fields")
        if not isinstance(fields, dict):
            return  # nothing to check the field references against
        for fname, fbody in fields.items():
            for rel, key, message in field_problems(fname, fbody, self.decls, self.types):
                self.add(f, base + ("fields", fname) + rel, message, key=key)
            old = fbody.get("renamed_from") if isinstance(fbody, dict) else None
            if isinstance(old, str) and old in fields and old != fname:
                self.add(f, base + ("fields", fname, "renamed_from"), f"'{old}' is still a field of '{name}'; "
                         "renamed_from names the field's previous name, which must be gone from the dictionary")
        for key in ("title", "sort", "owner", "assignee"):
            ref = body.get(key)
            ref = ref.lstrip("-") if isinstance(ref, str) else None
            if ref and isinstance(fields.get(ref), dict) and fields[ref].get("active") is False:
                self.add(f, base + ("fields", ref, "active"), f"'{ref}' is the entity's {key} field, so it cannot "
                         "be deactivated")
        old_entity = body.get("renamed_from")
        if isinstance(old_entity, str) and self.decls.known("entities", old_entity):
            self.add(f, base + ("renamed_from",), f"'{old_entity}' is still an entity; renamed_from names the "
                     "entity's previous name, which must be gone from the dictionary")
        self.check_columns(f, base, fields)
        self.check_field_refs(f, base, body, fields)
        for key in ("owner", "assignee"):
            ref = self._field_ref(f, base + (key,), body.get(key), fields, system=False)
            rtype = field_type(fields.get(ref), self.types) if ref else None
            if rtype and rtype.name != "user":
                self.add(f, base + (key,), f"the {key} field must be a user field, not {rtype.name}")
        self.check_form(f, base, body, fields)

    def check_columns(self, f: LoadedFile, base: tuple, fields: dict, only: set | None = None) -> None:
        """Each field takes its name, plus ``<name>_id`` (user/reference) or ``<name>_links`` (multi-valued).

        ``only``: report clashes of these fields alone (an extension's, checked against the entity's).
        """
        taken = {s: s for s in SYSTEM_FIELDS} | {f"{s}_id": s for s in SYSTEM_FIELDS if s.endswith("_by")}
        for fname, fbody in fields.items():
            ftype = field_type(fbody, self.types)
            names = [fname]
            if ftype and ftype.storage in ("fk_entity", "fk_user"):
                names.append(f"{fname}_id")
            elif ftype and ftype.storage == "codes":
                names.append(f"{fname}_links")
            for n in names:
                other = taken.get(n)
                if other and other != fname and fname not in SYSTEM_FIELDS and (only is None or fname in only):
                    self.add(f, base + ("fields", fname),
                             f"fields '{fname}' and '{other}' both need the column or attribute '{n}'", key=True)
                    break
            for n in names:
                taken.setdefault(n, fname)

    def _field_ref(self, f: LoadedFile, path: tuple, ref: Any, fields: dict, *, system: bool) -> str | None:
        """Report ``ref`` when it names no field; return it when it names one."""
        if not is_name(ref):
            return None
        if ref in fields or (system and ref in SYSTEM_FIELDS):
            return ref
        where = " (system fields are not allowed here)" if ref in SYSTEM_FIELDS else suggest(ref, fields)
        self.add(f, path, f"unknown field '{ref}'{where}")
        return None

    def check_field_refs(self, f: LoadedFile, base: tuple, body: dict, fields: dict) -> None:
        title = self._field_ref(f, base + ("title",), body.get("title"), fields, system=False)
        ftype = field_type(fields.get(title), self.types) if title else None
        if ftype and ftype.storage != "string" and ftype.base != "integer":
            self.add(f, base + ("title",), f"the title field must be a text field, not {ftype.name}")
        sort = body.get("sort")
        if isinstance(sort, str):
            sname = self._field_ref(f, base + ("sort",), sort.lstrip("-"), fields, system=True)
            stype = field_type(fields.get(sname), self.types) if sname in fields else None
            if stype and stype.storage == "codes":
                self.add(f, base + ("sort",), f"cannot sort by the multi-valued field '{sname}'")
        for key in ("list", "filters", "search"):
            refs = body.get(key)
            for i, ref in enumerate(refs if isinstance(refs, list) else []):
                found = self._field_ref(f, base + (key, i), ref, fields, system=key != "search")
                rtype = field_type(fields.get(found), self.types) if key == "search" and found else None
                if rtype and not rtype.text_search:
                    self.add(f, base + (key, i), f"field '{found}' of type {rtype.name} cannot be searched as "
                             f"text (searchable: {', '.join(t.name for t in self.types if t.text_search)})")

    def check_form(self, f: LoadedFile, base: tuple, body: dict, fields: dict) -> None:
        form = body.get("form")
        if not isinstance(form, list) or not form:
            return
        placed: dict[str, int] = {}
        complete = True
        for si, section in enumerate(form):
            refs = section.get("fields") if isinstance(section, dict) else None
            if not isinstance(refs, list):
                complete = False
                continue
            for i, ref in enumerate(refs):
                path = base + ("form", si, "fields", i)
                found = self._field_ref(f, path, ref, fields, system=False)
                if found in placed:
                    line = f.locate(base + ("form", placed[found])).line
                    self.add(f, path, f"field '{found}' is already in form section {placed[found] + 1} (line {line})")
                elif found:
                    placed[found] = si
                complete = complete and isinstance(ref, str)
        if not complete:
            return
        for fname, fbody in fields.items():
            ftype = field_type(fbody, self.types)
            if ftype and fbody.get("required") is True and fname not in placed and fbody.get("default") is None \
                    and ftype.name != "autonumber":
                self.add(f, base + ("fields", fname),
                         "required field without a default is missing from every form section", key=True)


    def check_extension(self, index: int, f: LoadedFile, name: str, body: Any) -> None:
        """``extend: {entity: {fields, list, search, filters, form}}``: fields added to an entity."""
        base = ("extend", name)
        if not is_name(name):
            return  # the structure pass reports the name
        if self.decls.known("entities", name) is False:
            self.add(f, base, self.decls.unknown("entities", name), key=True)
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            return
        added: dict = body["fields"]
        existing: dict[str, tuple[LoadedFile, tuple, Any]] = {}  # field → (file, path, body), in order
        entity = self.decls.first["entities"].get(name, (None, None))
        if isinstance(entity[1], dict) and isinstance(entity[1].get("fields"), dict):
            for fname, fbody in entity[1]["fields"].items():
                existing[fname] = (entity[0], ("entities", name, "fields", fname), fbody)
        for other, of, obody in self.decls.extensions[:index]:
            if other == name and isinstance(obody, dict) and isinstance(obody.get("fields"), dict):
                for fname, fbody in obody["fields"].items():
                    existing.setdefault(fname, (of, ("extend", name, "fields", fname), fbody))
        for fname, fbody in added.items():
            for rel, key, message in field_problems(fname, fbody, self.decls, self.types):
                self.add(f, base + ("fields", fname) + rel, message, key=key)
            if fname in existing:
                where = existing[fname][0].locate(existing[fname][1], key=True)
                self.add(f, base + ("fields", fname), f"entity '{name}' already has a field '{fname}' (declared at "
                         f"{where}); an extension can only add new fields", key=True)
            old = fbody.get("renamed_from") if isinstance(fbody, dict) else None
            if isinstance(old, str) and (old in existing or (old in added and old != fname)):
                self.add(f, base + ("fields", fname, "renamed_from"), f"'{old}' is still a field of '{name}'; "
                         "renamed_from names the field's previous name, which must be gone from the dictionary")
        new = [n for n in added if n not in existing]
        combined = {n: v[2] for n, v in existing.items()} | {n: added[n] for n in new}
        self.check_columns(f, base, combined, only=set(new))
        for key in ("list", "filters", "search"):
            refs = body.get(key)
            for i, ref in enumerate(refs if isinstance(refs, list) else []):
                found = self._added_ref(f, base + (key, i), ref, added)
                rtype = field_type(added.get(found), self.types) if key == "search" and found else None
                if rtype and not rtype.text_search:
                    self.add(f, base + (key, i), f"field '{found}' of type {rtype.name} cannot be searched as "
                             f"text (searchable: {', '.join(t.name for t in self.types if t.text_search)})")
        form = body.get("form")
        placed: dict[str, int] = {}
        for si, section in enumerate(form if isinstance(form, list) else []):
            refs = section.get("fields") if isinstance(section, dict) else None
            for i, ref in enumerate(refs if isinstance(refs, list) else []):
                path = base + ("form", si, "fields", i)
                found = self._added_ref(f, path, ref, added)
                if found in placed:
                    line = f.locate(base + ("form", placed[found])).line
                    self.add(f, path, f"field '{found}' is already in form section {placed[found] + 1} (line {line})")
                elif found:
                    placed[found] = si

    def _added_ref(self, f: LoadedFile, path: tuple, ref: Any, added: dict) -> str | None:
        """An extension's list, search, filters and form name only the fields it adds."""
        if not is_name(ref):
            return None
        if ref in added:
            return ref
        self.add(f, path, f"field '{ref}' is not added by this extension (name only the fields under its "
                          f"'fields'){suggest(ref, added)}")
        return None


def validate_files(files: list[LoadedFile], field_types: FieldTypes | None = None) -> list[SchemaIssue]:
    """Every issue in the given files: JSON Schema structure, then meaning across all files.

    ``field_types``: the app's field types (``Plugins.field_types()``); None: the built-in ones only.
    """
    types = field_types_of(field_types)
    issues: list[SchemaIssue] = []
    for f in files:
        issues += _guarded(f.path, lambda f=f: structure_issues(f, types.names))
    return issues + meaning_issues(files, types)


def meaning_issues(files: list[LoadedFile], field_types: FieldTypes | None = None) -> list[SchemaIssue]:
    """The checks across files (names, references, types); safe on any shape of data."""
    return _guarded(files[0].path if files else "<schema>", lambda: _Checker(files, field_types).run())


def _guarded(path: str, check: Callable[[], list[SchemaIssue]]) -> list[SchemaIssue]:
    """Run ``check``; a bug in it still ends as a reported issue, never as a traceback."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001
        message = f"internal error while checking ({type(exc).__name__}: {exc}); please report it"
        return [SchemaIssue(SourceLocation(path, 1, 1), "", one_line(message))]
