"""Read YAML dictionary files into plain data, remembering the line and column of every key and value.

Nothing here raises for bad input: every problem comes back as a located SchemaIssue.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crm_meta.errors import SchemaIssue, SourceLocation

Path_ = tuple  # a path into a document: keys and list indexes

MAX_NODES = 200_000  # aliases can multiply a small file into a huge one ("billion laughs")
MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"
TOP_LEVEL_KEYS = "version, menus, dictionaries, entities, extend"


@dataclass
class LoadedFile:
    """One parsed file: its data plus where each path into it sits in the text.

    ``parsed`` is false when the file could not be read as a mapping at all (``data`` is then None):
    its declarations are unknown, so checks that need every declaration are skipped.
    """

    path: str
    data: Any
    value_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    parsed: bool = True

    def locate(self, path: Path_, *, key: bool = False) -> SourceLocation:
        """The closest known place for ``path`` (the key itself when ``key`` is true)."""
        path = tuple(path)
        while True:
            marks = self.key_marks if key else self.value_marks
            if path in marks:
                line, col = marks[path]
                return SourceLocation(self.path, line, col)
            if key and path in self.value_marks:
                line, col = self.value_marks[path]
                return SourceLocation(self.path, line, col)
            if not path:
                return SourceLocation(self.path, 1, 1)
            path = path[:-1]
            key = False


def display_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        shown = os.path.relpath(path)
    except ValueError:  # another drive
        return str(path)
    return str(path) if shown.startswith("..") else shown


def one_line(text: str) -> str:
    """Messages are printed as one ``path:line:col: message`` line each."""
    return " ".join(str(text).split())


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _TooLarge(Exception):
    pass


class _Builder:
    """Turns a composed YAML node tree into dicts/lists/scalars, recording marks and soft issues."""

    def __init__(self, loaded: LoadedFile, loader: yaml.SafeLoader):
        self.loaded = loaded
        self.loader = loader
        self.issues: list[SchemaIssue] = []
        self.active: set[int] = set()  # nodes being built: an alias to one of them is a cycle
        self.count = 0

    def issue(self, node: yaml.Node, path: Path_, message: str) -> None:
        line, col = _mark(node)
        key = ".".join(str(p) for p in path)
        self.issues.append(SchemaIssue(SourceLocation(self.loaded.path, line, col), key, one_line(message)))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        self.loaded.value_marks.setdefault(path, _mark(node))
        if id(node) in self.active:
            self.issue(node, path, "an alias refers to the mapping or list that contains it")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            return self.scalar(node, path)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.Node, path: Path_) -> Any:
        if node.tag == STR_TAG:  # most values and every key: what construct_object would return, quicker
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError):  # e.g. 2024-13-45: looks like a date, is not one
            return node.value  # keep the text; the checks of the key say what they expected
        except yaml.YAMLError as exc:  # e.g. an unknown !tag
            self.issue(node, path, f"cannot read the value {node.value!r}: {getattr(exc, 'problem', None) or exc}")
            return node.value

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            if key in result:
                first = self.loaded.key_marks[path + (key,)][0]
                self.issue(key_node, path + (key,), f"duplicate key '{key}' (first given at line {first})")
                continue
            self.loaded.key_marks.setdefault(path + (key,), _mark(key_node))
            result[key] = self.build(value_node, path + (key,))
        for merge in merges:  # `<<: *anchor` fills in keys that are not given explicitly
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.issue(source, path, "'<<' must refer to a mapping (or a list of mappings)")
                    continue
                for k, v in self.mapping(source, path).items():
                    result.setdefault(k, v)
        return result

    def key(self, key_node: yaml.Node, path: Path_) -> str | None:
        if not isinstance(key_node, yaml.ScalarNode):
            self.issue(key_node, path, "keys must be plain text, not a list or mapping")
            return None
        key = self.scalar(key_node, path)
        if not isinstance(key, str):
            read = str(key).lower() if isinstance(key, bool) or key is None else repr(key)
            self.issue(key_node, path, f"the key {key_node.value!r} is read as {read}, not as text "
                                       "(put it in quotes)")
            return None
        return key


def _syntax_issue(shown: str, exc: yaml.MarkedYAMLError) -> SchemaIssue:
    mark = exc.problem_mark or exc.context_mark
    loc = SourceLocation(shown, mark.line + 1, mark.column + 1) if mark else SourceLocation(shown, 1, 1)
    problem = exc.problem or exc.context or "invalid YAML"
    context = exc.context_mark
    if exc.context and context and exc.problem_mark and context.line != exc.problem_mark.line:
        where = exc.context.replace("while parsing a ", "the ").replace("while scanning a ", "the ")
        problem += f" ({where} that starts at line {context.line + 1}, column {context.column + 1})"
    if "'\\t'" in problem:
        problem += " — indent with spaces, not tabs"
    elif "expected <block end>" in problem or "mapping values are not allowed" in problem:
        problem += " — check the indentation, and quote values that contain ': '"
    return SchemaIssue(loc, "", one_line(f"YAML syntax error: {problem}"))


def load_file(path: Path) -> tuple[LoadedFile, list[SchemaIssue]]:
    """Parse one file; every problem comes back as an issue, never raised."""
    shown = display_path(path)
    loaded = LoadedFile(shown, None, parsed=False)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return loaded, [SchemaIssue(SourceLocation(shown, 1, 1), "", one_line(f"cannot read file: {exc}"))]
    fast = getattr(yaml, "CSafeLoader", None)  # libyaml: ~5x faster on large dictionaries
    if fast is not None:
        loaded, issues = _load_text(shown, text, fast)
        if loaded.parsed or not issues:
            return loaded, issues
        # A problem: parse again with the pure-Python loader, whose messages the docs describe.
    return _load_text(shown, text, yaml.SafeLoader)


def _load_text(shown: str, text: str, loader_cls) -> tuple[LoadedFile, list[SchemaIssue]]:
    loaded = LoadedFile(shown, None, parsed=False)
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:  # empty, or comments only
            loaded.data, loaded.parsed = {}, True
            return loaded, []
        builder = _Builder(loaded, loader)
        data = builder.build(node, ())
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else f"the value {data!r}"
            message = f"the file must be a mapping of the sections {TOP_LEVEL_KEYS}, not {kind}"
            return loaded, [SchemaIssue(SourceLocation(shown, *_mark(node)), "", one_line(message))]
        loaded.data, loaded.parsed = data, True
        return loaded, builder.issues
    except yaml.MarkedYAMLError as exc:
        return loaded, [_syntax_issue(shown, exc)]
    except yaml.YAMLError as exc:
        return loaded, [SchemaIssue(SourceLocation(shown, 1, 1), "", one_line(f"YAML error: {exc}"))]
    except _TooLarge:
        message = f"the file expands to more than {MAX_NODES} values (too many aliases?)"
        return loaded, [SchemaIssue(SourceLocation(shown, 1, 1), "", message)]
    except RecursionError:
        return loaded, [SchemaIssue(SourceLocation(shown, 1, 1), "", "the file is nested too deeply")]
    finally:
        loader.dispose()


def schema_files(paths: list[str | Path]) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` file under the given files or directories, sorted per directory."""
    found: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            found += sorted(x for x in p.rglob("*") if x.suffix in (".yaml", ".yml") and x.is_file())
        else:
            found.append(p)
    return found


def load_files(paths: list[str | Path]) -> tuple[list[LoadedFile], list[SchemaIssue]]:
    """Parse every dictionary file under ``paths``; return the files and all issues met on the way.

    Files that could not be parsed are returned too, with ``parsed`` false and ``data`` None.
    """
    files: list[LoadedFile] = []
    issues: list[SchemaIssue] = []
    for entry in paths:
        try:
            found = schema_files([entry]) if Path(entry).exists() else None
        except OSError as exc:
            found, problem = [], f"cannot read the schema path: {exc}"
        else:
            problem = "schema path does not exist" if found is None else ""
        if problem:
            issues.append(SchemaIssue(SourceLocation(str(entry), 1, 1), "", one_line(problem)))
        for path in found or []:
            loaded, problems = load_file(path)
            issues += problems
            files.append(loaded)
    return files, issues
