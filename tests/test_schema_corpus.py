"""A table-driven corpus of malformed data dictionaries, each with the exact place it must report.

A case is either a small standalone dictionary (``thing.yaml``, next to ``base.yaml`` which declares
a menu, a dictionary and an entity to refer to) or a copy of the default ``schemas/`` with one edit.
``where`` is ``file:line:col`` (``file:line`` when the column is not pinned), or ``file:@marker`` for
edited copies: the line and column where ``marker`` sits in the edited file, so the expectation stays
exact when the default dictionary changes elsewhere.
"""
from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crm_meta.errors import SchemaErrors, SchemaIssue
from crm_meta.schema import load_and_validate

DEFAULT_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
LINE_SHAPE = re.compile(r"^(?P<path>[^:\n]+):(?P<line>[1-9][0-9]*):(?P<col>[1-9][0-9]*): (?P<message>\S.*)$")

BASE = """\
version: 1
menus:
  main: {label: Main}
dictionaries:
  colour:
    label: Colour
    items:
      - {code: red, label: Red, group: warm}
      - {code: blue, label: Blue, group: cold}
entities:
  other:
    label: Other
    fields:
      name: {type: string, label: Name}
"""


@dataclass
class Case:
    id: str
    where: str
    fragment: str
    thing: str | bytes | None = None  # standalone: the text of thing.yaml (next to base.yaml)
    edits: list[tuple[str, str, str]] = field(default_factory=list)  # (file, old, new) on schemas/
    extra: dict[str, str] = field(default_factory=dict)  # more files written under schemas/


def standalone(id: str, where: str, fragment: str, text: str | bytes) -> Case:
    return Case(id, where, fragment, thing=textwrap.dedent(text) if isinstance(text, str) else text)


def edited(id: str, file: str, old: str, new: str, where: str, fragment: str) -> Case:
    return Case(id, where, fragment, edits=[(file, old, new)])


CASES = [
    # --- YAML syntax --------------------------------------------------------------------------
    standalone("yaml-unclosed-bracket", "thing.yaml:5:11", "(the flow sequence that starts at line 4, column 11)", """\
        entities:
          thing:
            label: Thing
            list: [name, code
            fields:
              name: {type: string, label: Name}
        """),
    standalone("yaml-bad-indentation", "thing.yaml:4:2", "check the indentation", """\
        entities:
          thing:
            label: Thing
         fields:
              name: {type: string, label: Name}
        """),
    standalone("yaml-tab", "thing.yaml:4:1", "not tabs", "entities:\n  thing:\n    label: Thing\n\tfields: {}\n"),
    standalone("yaml-duplicate-key", "thing.yaml:4:5", "duplicate key 'label' (first given at line 3)", """\
        entities:
          thing:
            label: Thing
            label: Thing again
            fields:
              name: {type: string, label: Name}
        """),
    standalone("yaml-bad-date-value", "thing.yaml:5:46", "an ISO date such as 2024-05-01, found '2024-13-45'", """\
        entities:
          thing:
            label: Thing
            fields:
              due: {type: date, label: Due, default: 2024-13-45}
        """),
    standalone("yaml-recursive-alias", "thing.yaml:4:11", "alias refers to the mapping or list that contains it",
               "entities:\n  thing:\n    label: Thing\n    list: &loop\n      - *loop\n"
               "    fields: {name: {type: string, label: Name}}\n"),
    standalone("yaml-key-read-as-boolean", "thing.yaml:5:7", "the key 'no' is read as false", """\
        entities:
          thing:
            label: Thing
            fields:
              no: {type: string, label: No.}
        """),
    standalone("yaml-unknown-tag", "thing.yaml:3:12", "cannot read the value", """\
        entities:
          thing:
            label: !upper thing
            fields:
              name: {type: string, label: Name}
        """),
    standalone("not-utf8", "thing.yaml:1:1", "cannot read file", b"version: 1\nlabel: \xff\xfe\n"),
    # --- the top level ------------------------------------------------------------------------
    standalone("top-level-list", "thing.yaml:1:1", "must be a mapping of the sections", "- customer\n- contact\n"),
    standalone("top-level-text", "thing.yaml:1:1", "not the value 'just some text'", "just some text\n"),
    standalone("unknown-top-level-key", "thing.yaml:2:1", "unknown key 'entites' (did you mean 'entities'?)", """\
        version: 1
        entites: {}
        """),
    standalone("version-2", "thing.yaml:1:10", "version: must be 1, found 2", "version: 2\n"),
    standalone("entities-not-mapping", "thing.yaml:2:3", "expected a mapping (key: value), found a list", """\
        entities:
          - thing
        """),
    standalone("entity-body-is-text", "thing.yaml:2:10", "expected a mapping (key: value), found 'Thing'", """\
        entities:
          thing: Thing
        """),
    standalone("field-body-is-text", "thing.yaml:5:13", "expected a mapping (key: value), found 'string'", """\
        entities:
          thing:
            label: Thing
            fields:
              name: string
        """),
    # --- unknown keys -------------------------------------------------------------------------
    edited("unknown-entity-key", "customer.yaml", "    title: name\n", "    titel: name\n",
           "customer.yaml:@titel", "unknown key 'titel' (did you mean 'title'?)"),
    edited("unknown-field-key", "customer.yaml", "        indexed: true\n", "        indexd: true\n",
           "customer.yaml:@indexd", "unknown key 'indexd' (did you mean 'indexed'?)"),
    standalone("unknown-dictionary-key", "thing.yaml:4:5", "unknown key 'descripton'", """\
        dictionaries:
          size:
            label: Size
            descripton: T-shirt sizes
            items: [{code: s, label: S}]
        """),
    standalone("unknown-item-key", "thing.yaml:5:33", "unknown key 'colour'", """\
        dictionaries:
          size:
            label: Size
            items:
              - {code: s, label: Small, colour: red}
        """),
    # --- wrong types --------------------------------------------------------------------------
    standalone("label-number", "thing.yaml:3:12", "expected a label", """\
        entities:
          thing:
            label: 42
            fields:
              name: {type: string, label: Name}
        """),
    edited("required-yes-string", "customer.yaml", "        required: true\n        indexed: true\n",
           "        required: \"yes\"\n        indexed: true\n",
           "customer.yaml:@\"yes\"", "expected true or false, found 'yes'"),
    edited("length-not-a-number", "contact.yaml", "        length: 50\n        required: true\n",
           "        length: ten\n        required: true\n", "contact.yaml:@ten", "expected a whole number, found 'ten'"),
    standalone("items-not-a-list", "thing.yaml:4:12", "expected a list, found a mapping", """\
        dictionaries:
          size:
            label: Size
            items: {code: s, label: Small}
        """),
    standalone("code-is-a-number", "thing.yaml:4:20", "put it in quotes", """\
        dictionaries:
          size:
            label: Size
            items: [{code: 1, label: One}]
        """),
    # --- field types and required keys --------------------------------------------------------
    edited("misspelled-type", "customer.yaml", "type: phone", "type: phnoe", "customer.yaml:@phnoe",
           "type: 'phnoe' is not one of ['string', 'text'"),
    standalone("missing-entity-label", "thing.yaml:2:3", "missing required key 'label'", """\
        entities:
          thing:
            fields:
              name: {type: string, label: Name}
        """),
    standalone("missing-fields", "thing.yaml:2:3", "missing required key 'fields'", """\
        entities:
          thing:
            label: Thing
        """),
    standalone("empty-fields", "thing.yaml:4:13", "must not be empty", """\
        entities:
          thing:
            label: Thing
            fields: {}
        """),
    standalone("missing-type", "thing.yaml:5:7", "missing required key 'type'", """\
        entities:
          thing:
            label: Thing
            fields:
              name: {label: Name}
        """),
    standalone("missing-items", "thing.yaml:2:3", "missing required key 'items'", """\
        dictionaries:
          size:
            label: Size
        """),
    standalone("missing-code", "thing.yaml:5:9", "missing required key 'code'", """\
        dictionaries:
          size:
            label: Size
            items:
              - {label: Small}
        """),
    standalone("enum-without-dictionary", "thing.yaml:5:7", "an enum field needs 'dictionary'", """\
        entities:
          thing:
            label: Thing
            fields:
              colour: {type: enum, label: Colour}
        """),
    standalone("tags-without-dictionary", "thing.yaml:5:7", "a tags field needs 'dictionary'", """\
        entities:
          thing:
            label: Thing
            fields:
              tags: {type: tags, label: Tags}
        """),
    standalone("reference-without-entity", "thing.yaml:5:7", "a reference field needs 'entity'", """\
        entities:
          thing:
            label: Thing
            fields:
              parent: {type: reference, label: Parent}
        """),
    standalone("autonumber-without-format", "thing.yaml:5:7", "an autonumber field needs 'format'", """\
        entities:
          thing:
            label: Thing
            fields:
              number: {type: autonumber, label: No.}
        """),
    # --- data classes, deactivation, renames ---------------------------------------------------
    edited("unknown-data-class", "access.yaml", "classes: {revenue: hidden}  #", "classes: {revenu: hidden}  #",
           "access.yaml:@revenu: hidden}  #", "no field of the dictionary has the class 'revenu' (did you mean 'revenue'?)"),
    edited("renamed-from-existing-field", "customer.yaml", "        classes: [revenue]\n",
           "        classes: [revenue]\n        renamed_from: name  # old\n", "customer.yaml:@name  # old",
           "'name' is still a field of 'customer'"),
    # --- autonumber formats -------------------------------------------------------------------
    edited("autonumber-no-seq", "customer.yaml", '"C{YYYYMMDD}{seq:3}"', '"C{YYYYMMDD}"', "customer.yaml:@\"C{",
           "exactly one {seq:N} part, found 0"),
    edited("autonumber-two-seqs", "customer.yaml", '"C{YYYYMMDD}{seq:3}"', '"C{seq:2}-{seq:3}"',
           "customer.yaml:@\"C{", "exactly one {seq:N} part, found 2"),
    edited("autonumber-unknown-token", "customer.yaml", '"C{YYYYMMDD}{seq:3}"', '"C{YYYYMMDDHH}{seq:3}"',
           "customer.yaml:@\"C{", "unknown part '{YYYYMMDDHH}'"),
    edited("autonumber-width-0", "customer.yaml", '"C{YYYYMMDD}{seq:3}"', '"C{YYYYMMDD}{seq:0}"',
           "customer.yaml:@\"C{", "width must be between 1 and 12, not 0"),
    # --- duplicates ---------------------------------------------------------------------------
    Case("duplicate-entity-across-files", "extra.yaml:2:3", "entity 'customer' is already declared at "
         "schemas/customer.yaml:4:3", extra={"extra.yaml": "entities:\n  customer:\n    label: Again\n"
                                                          "    fields: {name: {type: string, label: Name}}\n"}),
    Case("duplicate-dictionary-across-files", "extra.yaml:3:3", "dictionary 'industry' is already declared at "
         "schemas/dictionaries.yaml:", extra={"extra.yaml": "version: 1\ndictionaries:\n  industry:\n"
                                                           "    label: Industry\n    items: [{code: x, label: X}]\n"}),
    edited("duplicate-item-code", "dictionaries.yaml", "{code: intent,", "{code: prospect,",
           "dictionaries.yaml:@prospect, label: {zh: 意向", "code 'prospect' is used twice in dictionary 'customer_type'"),
    # --- references ---------------------------------------------------------------------------
    edited("reference-to-missing-entity", "contact.yaml", "entity: customer", "entity: custmer",
           "contact.yaml:@custmer", "unknown entity 'custmer' (did you mean 'customer'?)"),
    edited("enum-to-missing-dictionary", "customer.yaml", "dictionary: industry", "dictionary: industries",
           "customer.yaml:@industries", "unknown dictionary 'industries'"),
    edited("tags-group-missing", "customer.yaml", "dictionary: customer_tag\n",
           "dictionary: customer_tag\n        group: hobby\n", "customer.yaml:@hobby",
           "dictionary 'customer_tag' has no items in group 'hobby' (groups: demand, value)"),
    edited("unknown-menu", "feedback.yaml", "menu: service", "menu: services", "feedback.yaml:@services",
           "unknown menu 'services' (did you mean 'service'?)"),
    edited("title-unknown-field", "contact.yaml", "title: name", "title: full_name", "contact.yaml:@full_name",
           "unknown field 'full_name'"),
    edited("sort-unknown-field", "feedback.yaml", "sort: -feedback_at", "sort: -feedback_time",
           "feedback.yaml:@-feedback_time", "unknown field 'feedback_time'"),
    edited("list-unknown-field", "contact.yaml", "list: [name, customer,", "list: [name, customr,",
           "contact.yaml:@customr", "unknown field 'customr' (did you mean 'customer'?)"),
    edited("search-unknown-field", "demand.yaml", "search: [demand_no, description]",
           "search: [demand_no, desc]", "demand.yaml:@desc]", "unknown field 'desc'"),
    edited("filters-unknown-field", "opportunity.yaml", "filters: [customer, stage,", "filters: [customer, phase,",
           "opportunity.yaml:@phase", "unknown field 'phase'"),
    edited("form-unknown-field", "opportunity.yaml", "fields: [contract_no, contract_amount,",
           "fields: [contract_number, contract_amount,", "opportunity.yaml:@contract_number",
           "unknown field 'contract_number' (did you mean 'contract_no'?)"),
    edited("search-non-text-field", "feedback.yaml", "search: [feedback_no, description, result]",
           "search: [feedback_no, satisfaction]", "feedback.yaml:@satisfaction]",
           "field 'satisfaction' of type integer cannot be searched as text"),
    edited("field-in-two-form-sections", "opportunity.yaml", "fields: [contract_no, contract_amount,",
           "fields: [contract_no, amount, contract_amount,", "opportunity.yaml:@amount, contract_amount",
           "field 'amount' is already in form section 1"),
    edited("required-field-not-on-form", "opportunity.yaml", "fields: [name, customer, stage,",
           "fields: [name, stage,", "opportunity.yaml:@customer:\n", "missing from every form section"),
    # --- limits -------------------------------------------------------------------------------
    edited("bad-regex-pattern", "customer.yaml", 'pattern: "^[0-9A-HJ-NPQRTUWXY]{2}', 'pattern: "^([0-9A-HJ-NPQRTUWXY]{2}',
           "customer.yaml:@\"^([0-9", "invalid regular expression: missing )"),
    edited("min-greater-than-max", "feedback.yaml", "min: 1\n", "min: 6\n", "feedback.yaml:@6\n",
           "min (6) is greater than max (5)"),
    standalone("scale-greater-than-precision", "thing.yaml:5:63", "scale (6) is greater than precision (4)", """\
        entities:
          thing:
            label: Thing
            fields:
              rate: {type: decimal, label: Rate, precision: 4, scale: 6}
        """),
    edited("min-length-greater-than-length", "customer.yaml", "min_length: 18", "min_length: 20",
           "customer.yaml:@20\n", "min_length (20) is greater than length (18)"),
    # --- names --------------------------------------------------------------------------------
    standalone("entity-sql-keyword-order", "thing.yaml:2:3", "'order' is an SQL keyword", """\
        entities:
          order:
            label: Order
            fields:
              name: {type: string, label: Name}
        """),
    standalone("entity-sql-keyword-select", "thing.yaml:2:3", "'select' is an SQL keyword", """\
        entities:
          select:
            label: Select
            fields:
              name: {type: string, label: Name}
        """),
    edited("field-python-keyword", "contact.yaml", "      position:\n", "      class:\n", "contact.yaml:@class:",
           "'class' is a Python keyword"),
    edited("field-system-created-at", "contact.yaml", "      birthday:\n", "      created_at:\n",
           "contact.yaml:@created_at:", "'created_at' is a system field"),
    edited("field-id", "contact.yaml", "      birthday:\n", "      id:\n", "contact.yaml:@id:",
           "'id' is a system field"),
    standalone("entity-prefix-ab", "thing.yaml:2:3", "prefix reserved for system tables", """\
        entities:
          ab_user:
            label: Users
            fields:
              name: {type: string, label: Name}
        """),
    edited("entity-not-identifier", "customer.yaml", "\n  customer:\n", "\n  Customer:\n", "customer.yaml:@Customer:",
           "'Customer' is not a valid name"),
    standalone("field-starts-with-digit", "thing.yaml:5:7", "'1abc' is not a valid name", """\
        entities:
          thing:
            label: Thing
            fields:
              1abc: {type: string, label: Name}
        """),
    standalone("field-with-dash", "thing.yaml:5:7", "'my-field' is not a valid name: use a lower-case letter", """\
        entities:
          thing:
            label: Thing
            fields:
              my-field: {type: string, label: Name}
        """),
    edited("field-clashes-with-fk-column", "contact.yaml", "      birthday:\n", "      owner_id:\n",
           "contact.yaml:@owner:", "fields 'owner' and 'owner_id' both need the column or attribute 'owner_id'"),
    # --- keys that do not apply ---------------------------------------------------------------
    standalone("length-on-integer", "thing.yaml:5:44", "'length' does not apply to an integer field", """\
        entities:
          thing:
            label: Thing
            fields:
              count: {type: integer, label: Count, length: 10}
        """),
    standalone("dictionary-on-string", "thing.yaml:5:41", "'dictionary' does not apply to a string field", """\
        entities:
          thing:
            label: Thing
            fields:
              name: {type: string, label: Name, dictionary: colour}
        """),
    standalone("unique-on-tags", "thing.yaml:5:67", "a tags field cannot be unique", """\
        entities:
          thing:
            label: Thing
            fields:
              tags: {type: tags, label: Tags, dictionary: colour, unique: true}
        """),
    # --- defaults -----------------------------------------------------------------------------
    edited("enum-default-not-in-dictionary", "customer.yaml", "default: prospect", "default: prospekt",
           "customer.yaml:@prospekt", "'prospekt' is not a code of dictionary 'customer_type' (did you mean 'prospect'?)"),
    standalone("integer-default-text", "thing.yaml:5:53", "expected a whole number, found 'x'", """\
        entities:
          thing:
            label: Thing
            fields:
              count: {type: integer, label: Count, default: x}
        """),
    edited("user-default-other", "demand.yaml", "default: current_user", "default: admin", "demand.yaml:@admin",
           "the only default of a user field is 'current_user', not 'admin'"),
    standalone("date-default-tomorrow", "thing.yaml:5:46", "found 'tomorrow'", """\
        entities:
          thing:
            label: Thing
            fields:
              due: {type: date, label: Due, default: tomorrow}
        """),
    standalone("readonly-required-without-default", "thing.yaml:5:41", "needs a default", """\
        entities:
          thing:
            label: Thing
            fields:
              name: {type: string, label: Name, readonly: true, required: true}
        """),
    # --- dictionary items and labels ----------------------------------------------------------
    edited("item-code-invalid", "dictionaries.yaml", "{code: intent,", "{code: \"in tent\",",
           "dictionaries.yaml:@\"in tent\"", "is not a valid code"),
    edited("label-missing-en", "customer.yaml", "label: {zh: 客户, en: Customer}", "label: {zh: 客户}",
           "customer.yaml:@label: {zh: 客户}", "missing required key 'en'"),
    standalone("label-unknown-language", "thing.yaml:3:32", "unknown key 'fr'", """\
        entities:
          thing:
            label: {zh: 东西, en: Thing, fr: Chose}
            fields:
              name: {type: string, label: Name}
        """),
    standalone("duplicate-list-entry", "thing.yaml:4:18", "'name' is listed twice", """\
        entities:
          thing:
            label: Thing
            list: [name, name]
            fields:
              name: {type: string, label: Name}
        """),
    standalone("item-attr-is-a-list", "thing.yaml:5:48", "expected text, a number, true or false or nothing", """\
        dictionaries:
          size:
            label: Size
            items:
              - {code: s, label: Small, attrs: {sizes: [1, 2]}}
        """),
    standalone("menu-icon-invalid", "thing.yaml:2:29", "is not a Font Awesome icon class", """\
        menus:
          more: {label: More, icon: users}
        """),
    # --- extend: fields added to an entity of another file -----------------------------------------
    standalone("extend-unknown-entity", "thing.yaml:2:3", "unknown entity 'othr' (did you mean 'other'?)", """\
        extend:
          othr:
            fields:
              extra: {type: string, label: Extra}
        """),
    standalone("extend-existing-field", "thing.yaml:4:7", "entity 'other' already has a field 'name' (declared at "
               "schemas/base.yaml:14:7)", """\
        extend:
          other:
            fields:
              name: {type: string, label: Name again}
        """),
    Case("extend-field-twice", "zz.yaml:4:7", "entity 'other' already has a field 'extra' (declared at "
         "schemas/thing.yaml:4:7)",
         thing="extend:\n  other:\n    fields:\n      extra: {type: string, label: Extra}\n",
         extra={"zz.yaml": "extend:\n  other:\n    fields:\n      extra: {type: text, label: Again}\n"}),
    standalone("extend-lists-a-field-it-does-not-add", "thing.yaml:5:19", "field 'name' is not added by this "
               "extension", """\
        extend:
          other:
            fields:
              extra: {type: string, label: Extra}
            list: [extra, name]
        """),
    standalone("extend-searches-a-boolean", "thing.yaml:5:14", "field 'flag' of type boolean cannot be searched", """\
        extend:
          other:
            fields:
              flag: {type: boolean, label: Flag}
            search: [flag]
        """),
    standalone("extend-unknown-key", "thing.yaml:3:5", "unknown key 'title' (allowed: fields, filters, form, list, "
               "search)", """\
        extend:
          other:
            title: extra
            fields:
              extra: {type: string, label: Extra}
        """),
    standalone("extend-bad-field", "thing.yaml:4:21", "'strng' is not one of", """\
        extend:
          other:
            fields:
              extra: {type: strng, label: Extra}
        """),
]


def _write(root: Path, case: Case) -> Path:
    schemas = root / "schemas"
    if case.thing is not None:
        schemas.mkdir()
        (schemas / "base.yaml").write_text(BASE, encoding="utf-8")
        target = schemas / "thing.yaml"
        target.write_bytes(case.thing if isinstance(case.thing, bytes) else case.thing.encode("utf-8"))
    else:
        shutil.copytree(DEFAULT_SCHEMAS, schemas)
    for name, old, new in case.edits:
        path = schemas / name
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"the edit of {name} must match exactly once: {old!r}"
        path.write_text(text.replace(old, new), encoding="utf-8")
    for name, text in case.extra.items():
        (schemas / name).write_text(text, encoding="utf-8")
    return schemas


def _expected_place(schemas: Path, where: str) -> tuple[str, int, int | None]:
    name, _, rest = where.partition(":")
    if rest.startswith("@"):
        marker = rest[1:]
        text = (schemas / name).read_text(encoding="utf-8")
        assert text.count(marker) == 1, f"marker {marker!r} must occur once in {name}"
        before = text[:text.index(marker)]
        return f"schemas/{name}", before.count("\n") + 1, len(before) - before.rfind("\n")
    line, _, col = rest.partition(":")
    return f"schemas/{name}", int(line), int(col) if col else None


def _issues(schemas: Path) -> list[SchemaIssue]:
    try:
        load_and_validate([schemas.name])
    except SchemaErrors as exc:
        for line in exc.report().splitlines():
            assert LINE_SHAPE.match(line), f"not a path:line:col: message line: {line!r}"
        assert not any("internal error" in i.message for i in exc.issues), exc.report()
        return exc.issues
    return []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_dictionary_is_reported_at_its_place(case: Case, tmp_path: Path, monkeypatch) -> None:
    schemas = _write(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    issues = _issues(schemas)
    assert issues, "the malformed dictionary was accepted"
    path, line, col = _expected_place(schemas, case.where)
    expected = f"{path}:{line}:{col}" if col else f"{path}:{line}:"
    hits = [i for i in issues if (str(i.location) == expected if col else str(i.location).startswith(expected))]
    report = "\n".join(str(i) for i in issues)
    assert hits, f"nothing reported at {expected}; got:\n{report}"
    assert any(case.fragment in str(i) for i in hits), f"no {case.fragment!r} at {expected}; got:\n{report}"


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)


def test_default_dictionary_copy_is_valid(tmp_path: Path, monkeypatch) -> None:
    shutil.copytree(DEFAULT_SCHEMAS, tmp_path / "schemas")
    monkeypatch.chdir(tmp_path)
    assert _issues(tmp_path / "schemas") == []


def test_every_problem_of_a_file_is_reported_in_one_run(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "base.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "schemas" / "thing.yaml").write_text(textwrap.dedent("""\
        version: 1
        entities:
          thing:
            label: 42
            menu: nowhere
            titel: name
            fields:
              name: {type: string, label: Name, length: ten}
              kind: {type: enum, label: Kind, dictionary: shapes}
              class: {type: strng, label: Class}
              count: {type: integer, label: Count, min: 5, max: 1, default: x}
            list: [name, nmae]
        """), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    found = [(i.location.line, i.message) for i in _issues(tmp_path / "schemas")]
    expected = [
        (4, "expected a label"),
        (5, "unknown menu 'nowhere'"),
        (6, "unknown key 'titel'"),
        (8, "expected a whole number, found 'ten'"),
        (9, "unknown dictionary 'shapes'"),
        (10, "'class' is a Python keyword"),
        (10, "'strng' is not one of"),
        (11, "min (5) is greater than max (1)"),
        (11, "expected a whole number, found 'x'"),
        (12, "unknown field 'nmae'"),
    ]
    missing = [e for e in expected if not any(line == e[0] and m.startswith(e[1]) for line, m in found)]
    assert not missing, f"not reported: {missing}; got {found}"


def test_a_broken_file_hides_neither_other_problems_nor_invents_missing_names(tmp_path: Path, monkeypatch) -> None:
    """customer.yaml does not parse: contact.yaml's own problem is still reported, but its reference
    to the customer entity (declared in the broken file) is not called unknown."""
    schemas = _write(tmp_path, edited("x", "customer.yaml", "    title: name\n", "    title: [name\n", "", ""))
    contact = schemas / "contact.yaml"
    contact.write_text(contact.read_text(encoding="utf-8").replace("type: email", "type: e-mail"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    report = "\n".join(str(i) for i in _issues(schemas))
    assert "schemas/customer.yaml:" in report and "YAML syntax error" in report
    assert "contact.yaml" in report and "'e-mail' is not one of" in report
    assert "unknown entity" not in report and "unknown dictionary" not in report


def test_an_invalid_declared_name_is_reported_once_not_at_every_reference(tmp_path: Path, monkeypatch) -> None:
    schemas = _write(tmp_path, edited("x", "customer.yaml", "\n  customer:\n", "\n  Customer:\n", "", ""))
    monkeypatch.chdir(tmp_path)
    report = "\n".join(str(i) for i in _issues(schemas))
    assert "'Customer' is not a valid name" in report
    assert "unknown entity" not in report
