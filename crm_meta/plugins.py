"""The plugins of one app: discovery, enabling, registration with pluggy, and calling the hooks.

Sources, in order (the first plugin of a name wins):

1. built-ins — modules of crm_meta registered through the same hooks (``crm_meta.builtin``);
2. installed packages — the entry-point group ``crm_meta.plugins`` (``name = "module"``);
3. bundled plugins — each package directory under ``CRM_PLUGIN_PATH`` (default: the project's
   ``plugins/``): ``plugins/<name>/__init__.py`` (or ``<name>/<name>/`` / ``<name>/src/<name>/``,
   the layouts of an installable project). It is imported as the top-level package ``<name>``; its
   hooks are taken from ``<name>.plugin`` when a ``plugin.py`` exists, else from the package itself;
4. objects given in the config key ``CRM_EXTRA_PLUGINS`` (tests, embedding apps).

Enabling: ``CRM_DISABLED_PLUGINS`` (comma list) turns plugins off, built-ins included.
``CRM_PLUGINS`` (comma list), when set, enables only the plugins it names (built-ins stay on).
Otherwise every discovered plugin is on unless its package says ``enabled_by_default = False``
(the example ``crm_birthday`` does). A name in ``CRM_PLUGINS`` that no source provides, an import
error, an unknown hook or a bad hook result stops the app with a ``PluginError`` naming the plugin.

Nothing here needs Flask or a database: ``flask crm check`` and ``flask crm plugins`` use it without
building the app; hooks get whatever their caller passes.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import pluggy

from crm_meta import hookspecs
from crm_meta.errors import PluginError, RecordError
from crm_meta.metadata.fieldtypes import FieldTypes

log = logging.getLogger("crm_meta.plugins")

PROJECT = hookspecs.PROJECT
ENTRY_POINT_GROUP = "crm_meta.plugins"
BUILTINS = ("crm_meta.builtin", "crm_meta.assignment", "crm_meta.process")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
JOB_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
RECORD_HOOKS = ("crm_before_create", "crm_after_create", "crm_before_update", "crm_after_update",
                "crm_before_delete", "crm_after_delete", "crm_before_transition", "crm_after_transition")

hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class Widget:
    """A dashboard box: ``render(build, actor) -> str`` returns trusted HTML."""

    name: str
    label: Any  # text, or {"zh": ..., "en": ...}
    render: Callable[..., str]
    entity: str | None = None  # shown only to users who may read this entity
    order: int = 100
    plugin: str = ""

    def title(self, lang: str) -> str:
        if isinstance(self.label, Mapping):
            return str(self.label.get("en" if lang.startswith("en") else "zh") or self.name)
        return str(self.label or self.name)


@dataclass(frozen=True)
class Job:
    """A periodic job: ``run(build)`` every ``interval`` (see ``flask crm jobs run``)."""

    name: str
    interval: timedelta
    run: Callable[..., Any]
    plugin: str = ""


@dataclass
class PluginInfo:
    """What is known about one discovered plugin, enabled or not (``flask crm plugins`` shows it)."""

    name: str
    origin: str  # "built-in", "installed (dist)", "bundled (plugins/x)", "config"
    enabled: bool
    reason: str = ""  # why it is off
    version: str | None = None
    obj: Any = None  # what is registered with pluggy (a module, class or instance)
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    schema_paths: list[Path] = field(default_factory=list)


@dataclass
class _Candidate:
    name: str
    origin: str
    load: Callable[[], Any]  # → the object holding the hookimpls
    version: Callable[[Any], str | None] = lambda obj: getattr(obj, "__version__", None)
    builtin: bool = False


def names(value: Any) -> list[str] | None:
    """A config value of plugin names: a comma list, or a list; None when not set ('' counts as unset)."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
        return [v for v in items if v] or None
    return [str(v).strip() for v in value if str(v).strip()]


def plugin_dirs(config: Mapping[str, Any]) -> list[Path]:
    value = config.get("CRM_PLUGIN_PATH")
    if value is None:
        from crm_meta.settings import PROJECT_ROOT

        return [PROJECT_ROOT / "plugins"]
    if isinstance(value, (list, tuple)):
        return [Path(v) for v in value]
    return [Path(p) for p in str(value).split(os.pathsep) if p]


# -- discovery ------------------------------------------------------------------------------------

def _builtin_candidates() -> list[_Candidate]:
    from crm_meta import __version__

    return [_Candidate(m, "built-in", lambda m=m: importlib.import_module(m), lambda obj: __version__, True)
            for m in BUILTINS]


def _entry_point_candidates() -> list[_Candidate]:
    found = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        origin = f"installed ({dist.name})" if dist else "installed"
        found.append(_Candidate(ep.name, origin, ep.load,
                                lambda obj, dist=dist: dist.version if dist else getattr(obj, "__version__", None)))
    return found


def _package_dir(directory: Path) -> Path | None:
    for candidate in (directory, directory / directory.name, directory / "src" / directory.name):
        if (candidate / "__init__.py").is_file():
            return candidate
    return None


def _import_bundled(name: str, package: Path) -> ModuleType:
    """Import ``plugins/<name>`` as the top-level package ``<name>`` (without touching sys.path)."""
    init = (package / "__init__.py").resolve()
    loaded = sys.modules.get(name)
    if loaded is not None:
        where = getattr(loaded, "__file__", None)
        if where and Path(where).resolve() == init:
            return loaded
        raise ImportError(f"another module named '{name}' is already loaded (from {where}); rename the plugin")
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.origin and Path(spec.origin).resolve() != init:
        raise ImportError(f"the name '{name}' is taken by an installed module ({spec.origin}); rename the plugin")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _bundled_load(name: str, package: Path) -> Callable[[], Any]:
    def load() -> Any:
        module = _import_bundled(name, package)
        if (package / "plugin.py").is_file():
            return importlib.import_module(f"{name}.plugin")
        return module
    return load


def _bundled_version(name: str) -> Callable[[Any], str | None]:
    return lambda obj: getattr(sys.modules.get(name), "__version__", None) or getattr(obj, "__version__", None)


def _bundled_candidates(dirs: Iterable[Path]) -> list[_Candidate]:
    from crm_meta.schema.loader import display_path

    found = []
    for base in dirs:
        if not base.is_dir():
            continue
        for directory in sorted(p for p in base.iterdir() if p.is_dir()):
            if directory.name.startswith((".", "_")) or directory.name == "tests":
                continue
            package = _package_dir(directory)
            if package is None:
                continue
            name = directory.name
            found.append(_Candidate(name, f"bundled ({display_path(directory)})", _bundled_load(name, package),
                                    _bundled_version(name)))
    return found


def _given_candidates(objects: Iterable[Any]) -> list[_Candidate]:
    found = []
    for item in objects or ():
        name, obj = item if isinstance(item, tuple) else (plugin_name_of(item), item)
        found.append(_Candidate(name, "config", lambda obj=obj: obj))
    return found


def plugin_name_of(obj: Any) -> str:
    """The name a plugin object registers under: a module's name, else its ``name`` or class name."""
    if isinstance(obj, ModuleType):
        return obj.__name__
    named = getattr(obj, "name", None) or getattr(obj, "__name__", None)
    return str(named) if isinstance(named, str) else type(obj).__name__


# -- the set of plugins of one app ----------------------------------------------------------------

class Plugins:
    """The enabled plugins of one app and what they contributed; built by :func:`load_plugins`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        self.commands: dict[str, Any] = {}  # name → click.Command
        self.command_plugins: dict[str, str] = {}  # command name → plugin
        self.widgets: list[Widget] = []
        self.jobs: dict[str, Job] = {}
        self._field_types: FieldTypes | None = None

    # what is there -----------------------------------------------------------------------------
    @property
    def hook(self):
        return self.pm.hook

    @property
    def enabled(self) -> list[PluginInfo]:
        return [i for i in self.infos if i.enabled and i.error is None]

    def info(self, name: str) -> PluginInfo:
        return next(i for i in self.infos if i.name == name)

    def schema_paths(self) -> list[Path]:
        return [p for i in self.enabled for p in i.schema_paths]

    def field_types(self) -> FieldTypes:
        """The app's field types: what the enabled plugins return from ``crm_field_types`` (the standard
        types come from ``crm_meta.builtin``; they stay, as the language's own, when it is disabled).
        Two plugins declaring one name raise a ``PluginError`` naming both."""
        if self._field_types is None:
            # built-ins first, then in the order plugins were registered: a clash blames the later one
            order = {i.name: (i.origin != "built-in", n) for n, i in enumerate(self.infos)}
            results = sorted(self.each("crm_field_types"), key=lambda r: order.get(r[0], (True, len(order))))
            self._field_types = FieldTypes.collect(results).with_builtins("crm_meta")
        return self._field_types

    def plugin_of_path(self, path: str | Path) -> str | None:
        """The enabled plugin that contributed ``path`` (a file or directory it returned), if any."""
        target = Path(path).resolve()
        for info in self.enabled:
            for p in info.schema_paths:
                p = p.resolve()
                if target == p or p in target.parents:
                    return info.name
        return None

    # calling hooks ------------------------------------------------------------------------------
    def _impls(self, hook_name: str):
        """The implementations of a hook in pluggy's calling order (tryfirst … trylast)."""
        return list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))

    def each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation; (plugin name, result) pairs. Errors name the plugin."""
        results = []
        for impl in self._impls(hook_name):
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except PluginError:
                raise
            except Exception as exc:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)
                raise PluginError(impl.plugin_name, f"{hook_name} raised {_describe(exc)}",
                                  hook=hook_name, original=exc) from exc
            results.append((impl.plugin_name, result))
        return results

    def fire(self, hook_name: str, **kwargs: Any) -> None:
        """Call a record hook. ``RecordError`` (``HookRefused`` …) passes through, marked with the
        plugin; anything else becomes a ``PluginError`` naming it (the caller rolls back)."""
        for impl in self._impls(hook_name):
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except RecordError as exc:
                if getattr(exc, "plugin", "") is None:
                    exc.plugin = impl.plugin_name
                raise
            except Exception as exc:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)
                raise PluginError(impl.plugin_name, f"{hook_name} raised {_describe(exc)}",
                                  hook=hook_name, original=exc) from exc

    def has_record_hooks(self) -> bool:
        return any(getattr(self.pm.hook, h).get_hookimpls() for h in RECORD_HOOKS)

    def register_views(self, appbuilder: Any, build: Any) -> None:
        self.each("crm_register_views", appbuilder=appbuilder, build=build)

    # loading ------------------------------------------------------------------------------------
    def _register(self, info: PluginInfo) -> None:
        obj = info.obj
        try:
            self.pm.register(obj, name=info.name)
        except ValueError as exc:  # the same object under another name
            raise PluginError(info.name, f"cannot be registered: {exc}") from None
        except pluggy.PluginValidationError as exc:
            raise PluginError(info.name, f"has an invalid hook: {exc}") from None
        callers = self.pm.get_hookcallers(obj) or []
        for caller in callers:
            impl = next(i for i in caller.get_hookimpls() if i.plugin_name == info.name)
            if caller.spec is None:
                self.pm.unregister(obj, name=info.name)
                known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("crm_")))
                raise PluginError(info.name, f"implements the unknown hook '{caller.name}' (known hooks: {known})")
            if impl.hookwrapper or impl.wrapper:
                self.pm.unregister(obj, name=info.name)
                raise PluginError(info.name, f"'{caller.name}' is a hook wrapper; crm_meta hooks take plain "
                                             "implementations (tryfirst/trylast order them)")
        info.hooks = sorted(c.name for c in callers)

    def _collect(self) -> None:
        """Ask the start-up hooks once; a bad result stops the app, naming the plugin."""
        for plugin, paths in self.each("crm_schema_paths"):
            if paths is None:
                continue
            if isinstance(paths, (str, os.PathLike)):
                paths = [paths]
            try:
                self.info(plugin).schema_paths = [Path(p) for p in paths]
            except TypeError:
                raise PluginError(plugin, f"crm_schema_paths must return a list of paths, not {paths!r}") from None
        self.field_types()
        from crm_meta.cli import crm as builtin_group

        for plugin, commands in self.each("crm_cli_commands"):
            for cmd in commands or ():
                cmd_name = getattr(cmd, "name", None)
                if not cmd_name or not callable(getattr(cmd, "main", None)):
                    raise PluginError(plugin, f"crm_cli_commands returned {cmd!r}, not a click command")
                if cmd_name in builtin_group.commands:
                    raise PluginError(plugin, f"the command 'crm {cmd_name}' is built in; choose another name")
                if cmd_name in self.commands:
                    raise PluginError(plugin, f"the command 'crm {cmd_name}' is already added by plugin "
                                              f"'{self.command_plugins[cmd_name]}'")
                self.commands[cmd_name], self.command_plugins[cmd_name] = cmd, plugin
        seen: dict[str, str] = {}
        for plugin, widgets in self.each("crm_dashboard_widgets"):
            for w in widgets or ():
                widget = _widget(plugin, w)
                if widget.name in seen:
                    raise PluginError(plugin, f"the widget '{widget.name}' is already added by plugin "
                                              f"'{seen[widget.name]}'")
                seen[widget.name] = plugin
                self.widgets.append(widget)
        self.widgets.sort(key=lambda w: (w.order, w.name))
        for plugin, jobs in self.each("crm_scheduled_jobs"):
            for j in jobs or ():
                job = _job(plugin, j)
                if job.name in self.jobs:
                    raise PluginError(plugin, f"the job '{job.name}' is already added by plugin "
                                              f"'{self.jobs[job.name].plugin}'")
                self.jobs[job.name] = job


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _widget(plugin: str, w: Any) -> Widget:
    try:
        if isinstance(w, Widget):
            widget = Widget(w.name, w.label, w.render, w.entity, w.order, plugin)
        elif isinstance(w, Mapping):
            widget = Widget(w["name"], w.get("label") or w["name"], w["render"], w.get("entity"),
                            int(w.get("order", 100)), plugin)
        else:
            widget = Widget(*w, plugin=plugin) if isinstance(w, tuple) else None
    except (KeyError, TypeError, ValueError) as exc:
        raise PluginError(plugin, f"crm_dashboard_widgets returned a bad widget {w!r}: {_describe(exc)}") from None
    if widget is None or not isinstance(widget.name, str) or not callable(widget.render):
        raise PluginError(plugin, f"crm_dashboard_widgets returned {w!r}, not a Widget(name, label, render)")
    return widget


def _job(plugin: str, j: Any) -> Job:
    try:
        name, interval, run = (j.name, j.interval, j.run) if isinstance(j, Job) else j
    except (TypeError, ValueError):
        raise PluginError(plugin, f"crm_scheduled_jobs returned {j!r}, not a (name, interval, callable) "
                                  "tuple") from None
    if not isinstance(name, str) or not JOB_NAME.match(name):
        raise PluginError(plugin, f"the job name {name!r} is not an identifier (lower-case letters, digits, _)")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool):
        interval = timedelta(seconds=interval)
    if not isinstance(interval, timedelta) or interval <= timedelta(0):
        raise PluginError(plugin, f"the job '{name}' needs a positive interval (timedelta or seconds), "
                                  f"not {interval!r}")
    if not callable(run):
        raise PluginError(plugin, f"the job '{name}' has no callable")
    return Job(name, interval, run, plugin)


def load_plugins(config: Mapping[str, Any], *, strict: bool = True) -> Plugins:
    """Discover, enable and register the plugins for an app with this ``config``.

    ``strict`` (start-up): the first broken plugin raises ``PluginError``. Otherwise (``crm plugins``)
    problems are kept in ``PluginInfo.error`` and the other plugins still load.
    """
    plugins = Plugins()
    only = names(config.get("CRM_PLUGINS"))
    disabled = set(names(config.get("CRM_DISABLED_PLUGINS")) or ())
    candidates = (_builtin_candidates() + _entry_point_candidates()
                  + _bundled_candidates(plugin_dirs(config)) + _given_candidates(config.get("CRM_EXTRA_PLUGINS")))
    seen: dict[str, PluginInfo] = {}
    for c in candidates:
        if c.name in seen:
            plugins.infos.append(PluginInfo(c.name, c.origin, False, f"shadowed by the {seen[c.name].origin} one"))
            continue
        if not NAME.match(c.name):
            info = PluginInfo(c.name, c.origin, False, error="the plugin name must be an identifier")
        elif c.name in disabled:
            info = PluginInfo(c.name, c.origin, False, "listed in CRM_DISABLED_PLUGINS")
        elif only is not None and not c.builtin and c.name not in only:
            info = PluginInfo(c.name, c.origin, False, "not listed in CRM_PLUGINS")
        else:
            info = PluginInfo(c.name, c.origin, True)
        seen[c.name] = info
        plugins.infos.append(info)
        if info.error is None and (info.enabled or not strict):
            try:
                info.obj = c.load()
                info.version = c.version(info.obj)
            except Exception as exc:  # noqa: BLE001 - any import problem is the plugin's
                info.error = f"cannot be imported: {_describe(exc)}"
            else:
                default_on = getattr(sys.modules.get(c.name), "enabled_by_default", None)
                if default_on is None:
                    default_on = getattr(info.obj, "enabled_by_default", True)
                if info.enabled and only is None and not c.builtin and default_on is False:
                    info.enabled, info.reason = False, "off by default (enable it with CRM_PLUGINS)"
        if info.error and (info.enabled or not NAME.match(c.name)) and strict:
            raise PluginError(c.name, info.error)
    missing = sorted(set(only or ()) - set(seen))
    if missing:
        known = ", ".join(sorted(seen)) or "none"
        problem = f"CRM_PLUGINS names a plugin that was not found (discovered: {known})"
        if strict:
            raise PluginError(", ".join(missing), problem)
        for name in missing:
            plugins.infos.append(PluginInfo(name, "CRM_PLUGINS", False, error="not found"))
    for info in plugins.infos:
        if info.enabled and info.error is None:
            try:
                plugins._register(info)
            except PluginError as exc:
                if strict:
                    raise
                info.error = exc.problem
    try:
        plugins._collect()
    except PluginError as exc:
        if strict:
            raise
        plugins.info(exc.plugin).error = exc.problem
    if not strict:
        _describe_disabled(plugins)
    return plugins


def _describe_disabled(plugins: Plugins) -> None:
    """For listings: the hooks and schema files a disabled (but importable) plugin would bring."""
    for info in plugins.infos:
        if info.enabled or info.obj is None or info.error:
            continue
        probe = pluggy.PluginManager(PROJECT)
        probe.add_hookspecs(hookspecs)
        try:
            probe.register(info.obj, name=info.name)
            info.hooks = sorted(c.name for c in probe.get_hookcallers(info.obj) or [])
            for paths in probe.hook.crm_schema_paths():
                info.schema_paths += [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        except Exception as exc:  # noqa: BLE001 - a listing shows the problem instead
            info.error = _describe(exc)
