"""Frozen dataclasses describing a built data dictionary; a build is a value, never mutated."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from crm_meta.errors import SourceLocation
from crm_meta.metadata.fieldtypes import FIELD_TYPES, CustomType, FieldType

SYSTEM_FIELDS = ("created_at", "created_by", "updated_at", "updated_by")
DEPARTMENT_FIELD = "department"  # system field of owned entities: the owner's department, stamped on save
DEPARTMENT_DICTIONARY = "department"  # the dictionary holding the department tree (attrs.parent)
RESERVED_FIELD_NAMES = frozenset({"id", "version", DEPARTMENT_FIELD, *SYSTEM_FIELDS})
ACTIONS = ("read", "create", "update", "delete", "export", "import", "reveal", "approve")
SCOPES = ("own", "department", "department_tree", "all")  # narrowest first
RULE_ORDER = ("readonly", "masked", "hidden")  # field rules, mildest first


@dataclass(frozen=True)
class Label:
    """A text in Chinese and English."""

    zh: str
    en: str

    def get(self, lang: str | None) -> str:
        return self.en if (lang or "zh").startswith("en") else self.zh

    def __str__(self) -> str:
        return f"{self.zh} {self.en}" if self.zh != self.en else self.zh


@dataclass(frozen=True)
class DictItem:
    code: str
    label: Label
    order: int
    active: bool = True
    group: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Dictionary:
    name: str
    label: Label
    items: tuple[DictItem, ...]

    def item(self, code: str) -> DictItem | None:
        return next((i for i in self.items if i.code == code), None)


@dataclass(frozen=True)
class Field:
    """One field of an entity, as declared (or a system field such as created_at)."""

    name: str
    type: str
    label: Label
    help: Label | None = None
    required: bool = False
    unique: bool = False
    indexed: bool = False
    readonly: bool = False
    default: Any = None
    length: int | None = None
    min_length: int | None = None
    min: float | None = None
    max: float | None = None
    precision: int | None = None
    scale: int | None = None
    pattern: str | None = None
    message: Label | None = None
    dictionary: str | None = None
    group: str | None = None
    entity: str | None = None
    format: str | None = None
    mask: str | None = None
    needs_approval: bool = False
    system: bool = False
    renamed_from: str | None = None
    classes: tuple[str, ...] = ()
    # A plugin's type (hook crm_field_types): ``type`` is its name; storage, column, widget come from its base.
    custom: CustomType | None = field(default=None, repr=False)
    source: SourceLocation | None = field(default=None, compare=False)

    @property
    def kind(self) -> FieldType:
        return self.custom.kind if self.custom is not None else FIELD_TYPES[self.type]

    @property
    def base(self) -> str:
        """The built-in type whose behaviour the field has (its own type, or a plugin type's base)."""
        return self.kind.base

    @property
    def storage(self) -> str:
        return self.kind.storage

    @property
    def is_multi(self) -> bool:
        return self.storage == "codes"

    @property
    def is_fk(self) -> bool:
        return self.storage in ("fk_entity", "fk_user")

    @property
    def column(self) -> str | None:
        """The table column holding the value (None for multi-valued fields kept in a link table)."""
        if self.is_multi:
            return None
        return f"{self.name}_id" if self.is_fk else self.name

    @property
    def max_length(self) -> int | None:
        default = self.kind.length
        return (self.length or default) if default else None

    @property
    def editable(self) -> bool:
        return not (self.system or self.readonly or self.type == "autonumber")


@dataclass(frozen=True)
class FormSection:
    label: Label
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Entity:
    name: str
    label: Label
    fields: tuple[Field, ...]
    menu: str | None = None
    order: int = 0
    title: str | None = None
    sort_field: str = "created_at"
    sort_desc: bool = True
    list_fields: tuple[str, ...] = ()
    search_fields: tuple[str, ...] = ()
    filter_fields: tuple[str, ...] = ()
    form: tuple[FormSection, ...] = ()
    owner_field: str | None = None
    assignee_field: str | None = None
    source: SourceLocation | None = field(default=None, compare=False)
    # Fields declared `active: false`: their columns (and data) stay, nothing else sees them.
    retired: tuple[Field, ...] = ()
    renamed_from: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", MappingProxyType({f.name: f for f in self.fields}))

    @property
    def owned(self) -> bool:
        """Records have an owner, so row scopes apply and the owner's department is stamped."""
        return self.owner_field is not None

    def field(self, name: str) -> Field:
        return self._by_name[name]  # type: ignore[attr-defined]

    def has_field(self, name: str) -> bool:
        return name in self._by_name  # type: ignore[attr-defined]

    @property
    def user_fields(self) -> tuple[Field, ...]:
        """Declared fields, without the system ones."""
        return tuple(f for f in self.fields if not f.system)

    @property
    def form_fields(self) -> tuple[str, ...]:
        return tuple(n for s in self.form for n in s.fields)

    @property
    def table(self) -> str:
        return self.name


@dataclass(frozen=True)
class Menu:
    name: str
    label: Label
    order: int = 0
    icon: str | None = None


@dataclass(frozen=True)
class Grant:
    """What a role may do with one entity."""

    actions: frozenset[str]
    scope: str = "own"
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    classes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def rule(self, f: "Field") -> str | None:
        """This grant's rule for ``f``: its own entry in ``fields``, else the strictest of its classes'."""
        own = self.fields.get(f.name)
        if own is not None or not f.classes or not self.classes:
            return own
        rules = [self.classes[c] for c in f.classes if c in self.classes]
        return max(rules, key=RULE_ORDER.index) if rules else None


@dataclass(frozen=True)
class Role:
    name: str
    label: Label
    superuser: bool = False
    grants: Mapping[str, Grant] = field(default_factory=lambda: MappingProxyType({}))
    screens: tuple[str, ...] = ()

    def grant(self, entity: str) -> Grant | None:
        """The role's grant on ``entity`` (its own entry, else the ``*`` default, else None)."""
        return self.grants.get(entity) or self.grants.get("*")


@dataclass(frozen=True)
class Evidence:
    """One alternative of ``requires_one_of``: a field with a value, or a related record."""

    field_name: str | None = None
    related: str | None = None
    where: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class FollowUpTask:
    """Transition effect ``follow_up``: a follow-up of the record's customer due ``in_days`` after
    the move (crm_meta/services/followups.py ``follow_up_task``)."""

    in_days: int
    note: Label | None = None


@dataclass(frozen=True)
class Transition:
    sources: frozenset[str]
    target: str
    label: Label | None = None
    roles: frozenset[str] | None = None  # None: every role that may update the entity
    requires: tuple[str, ...] = ()
    requires_one_of: tuple[Evidence, ...] = ()
    sets: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    notify_owner: bool = False
    comment_required: bool = False
    follow_up: FollowUpTask | None = None


@dataclass(frozen=True)
class Pipeline:
    name: str
    label: Label
    entity: str
    field_name: str
    initial: str | None
    transitions: tuple[Transition, ...]

    def moves_from(self, state: str | None) -> tuple[Transition, ...]:
        return tuple(t for t in self.transitions if state in t.sources)

    def move(self, source: str | None, target: str) -> Transition | None:
        return next((t for t in self.transitions if source in t.sources and t.target == target), None)


@dataclass(frozen=True)
class Registry:
    """A whole built data dictionary; ``digest`` changes whenever any declaration does."""

    entities: tuple[Entity, ...]
    dictionaries: tuple[Dictionary, ...]
    menus: tuple[Menu, ...]
    digest: str
    roles: tuple[Role, ...] = ()
    pipelines: tuple[Pipeline, ...] = ()
    # The app's crm_meta.metadata.fieldtypes.FieldTypes the dictionary was validated and built with.
    field_types: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pipelines", MappingProxyType(
            {(p.entity, p.field_name): p for p in self.pipelines}))
        object.__setattr__(self, "_roles", MappingProxyType({r.name: r for r in self.roles}))
        object.__setattr__(self, "_entities", MappingProxyType({e.name: e for e in self.entities}))
        object.__setattr__(self, "_dicts", MappingProxyType({d.name: d for d in self.dictionaries}))
        object.__setattr__(self, "_menus", MappingProxyType({m.name: m for m in self.menus}))

    def entity(self, name: str) -> Entity:
        return self._entities[name]  # type: ignore[attr-defined]

    def dictionary(self, name: str) -> Dictionary:
        return self._dicts[name]  # type: ignore[attr-defined]

    def menu(self, name: str) -> Menu | None:
        return self._menus.get(name)  # type: ignore[attr-defined]

    def role(self, name: str) -> Role | None:
        return self._roles.get(name)  # type: ignore[attr-defined]

    def pipeline(self, entity: str, field_name: str) -> Pipeline | None:
        return self._pipelines.get((entity, field_name))  # type: ignore[attr-defined]

    def pipelines_of(self, entity: str) -> tuple[Pipeline, ...]:
        return tuple(p for p in self.pipelines if p.entity == entity)

    def has_dictionary(self, name: str) -> bool:
        return name in self._dicts  # type: ignore[attr-defined]
