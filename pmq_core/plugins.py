"""Finding, loading and checking plugins.

Plugins are found through the ``pmq`` entry-point group and loaded lazily,
once, on first need: importing pmq_core loads nothing. Loading order is the
entry points' order, sorted by name, then objects registered in code. Any
failure stops loading with one message naming the plugin and its
distribution.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from collections.abc import Iterable
from typing import Any, cast

import attrs
import pluggy

from pmq_core import hookspecs, plugin_settings
from pmq_core.errors import PluginError, shown
from pmq_core.hooks import HOOK_NAMES, Hooks
from pmq_core.jobtypes import JobType

ENTRY_POINT_GROUP = "pmq"


@attrs.frozen
class PluginInfo:
    """One loaded plugin: where it comes from and what it provides."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    job_types: tuple[JobType, ...]
    settings: tuple[str, ...] = ()
    """The settings sections it declares (``pmq_register_settings``)."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": list(self.hooks),
            "job_types": [jt.describe() for jt in self.job_types],
        }


def installed_entry_points() -> list[importlib.metadata.EntryPoint]:
    """Every plugin installed in this environment, sorted by name."""
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _origin(ep: importlib.metadata.EntryPoint | None) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None) if ep else None
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


class Plugins:
    """The plugins one process runs with, and the job types they declare.

    ``selection`` names the entry points to load (None: all installed);
    ``extra`` are plugin objects registered directly, e.g. by tests or an
    application that defines its job types in its own code.
    """

    def __init__(self, selection: Iterable[str] | None = None, extra: Iterable[Any] = (),
                 *, entry_points: bool = True) -> None:
        self.selection = tuple(selection) if selection is not None else None
        self._extra = list(extra)
        self._entry_points = entry_points
        self._loaded = False
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._hooks: Hooks | None = None
        self.infos: list[PluginInfo] = []
        self.job_types: dict[str, JobType] = {}
        self._owners: dict[str, str] = {}
        #: Each declared settings section's attrs class, and who declared it.
        self.settings_classes: dict[str, type] = {}
        self._section_owners: dict[str, str] = {}
        self._settings: dict[str, Any] | None = None

    @property
    def extra(self) -> tuple[Any, ...]:
        """The plugin objects registered in code."""
        return tuple(self._extra)

    @property
    def entry_points(self) -> bool:
        """Whether installed plugins (entry points) are loaded."""
        return self._entry_points

    @property
    def hooks(self) -> Hooks:
        """The plugins' hooks, one typed method each; plugins loaded."""
        self.load()
        assert self._hooks is not None
        return self._hooks

    def load(self) -> Plugins:
        """Load and check every plugin, once."""
        if self._loaded:
            return self
        origins: dict[str, tuple[str | None, str | None]] = {}
        if self._entry_points:
            available = installed_entry_points()
            if self.selection is not None:
                names = {ep.name for ep in available}
                missing = [name for name in self.selection if name not in names]
                if missing:
                    raise PluginError(
                        f"plugin(s) {', '.join(shown(name) for name in missing)} not installed; installed: "
                        f"{', '.join(sorted(names)) or 'none'}"
                    )
                available = [ep for ep in available if ep.name in self.selection]
            for ep in available:
                dist, version = _origin(ep)
                try:
                    plugin = ep.load()
                except Exception as exc:
                    raise PluginError(
                        f"plugin {ep.name!r} (distribution {dist or 'unknown'}) failed to import: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                self._register(plugin, ep.name, dist)
                origins[ep.name] = (dist, version)
        for plugin in self._extra:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            self._register(plugin, name, None)
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise self._unknown_hook(exc.plugin, origins) from None
        self._hooks = Hooks(self._pm)
        self._collect(self._hooks, origins)
        self._loaded = True
        return self

    def _unknown_hook(self, plugin: Any, origins: dict[str, tuple[str | None, str | None]]) -> PluginError:
        """The error for a plugin implementing a hook pmq does not have (a
        misspelling, usually), naming the plugin and the closest real hooks."""
        name = self._pm.get_name(plugin) or repr(plugin)
        dist = origins.get(name, (None, None))[0] or "not installed"
        known = sorted(HOOK_NAMES)
        unknown = sorted(
            caller.name for caller in self._pm.get_hookcallers(plugin) or []
            if not caller.has_spec()
            and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
        )
        problems = []
        for hook in unknown:
            close = difflib.get_close_matches(hook, known, n=1)
            problems.append(f"{hook!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return PluginError(
            f"plugin {name!r} (distribution {dist}) implements unknown hook(s) {', '.join(problems)}; "
            "every hook is listed in pmq_core.hookspecs"
        )

    def _register(self, plugin: Any, name: str, dist: str | None) -> None:
        try:
            self._pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(
                f"plugin {name!r} (distribution {dist or 'not installed'}) cannot be registered: {exc}"
            ) from None

    def _collect(self, hooks: Hooks, origins: dict[str, tuple[str | None, str | None]]) -> None:
        declared: dict[str, list[JobType]] = {}
        for call in hooks.register_job_types():
            name = call.plugin
            dist = origins.get(name, (None, None))[0] or "not installed"
            try:
                result = cast(list[Any], call() or [])
            except Exception as exc:
                raise PluginError(
                    f"plugin {name!r} (distribution {dist}) failed to declare its job types: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            for item in result:
                if not isinstance(item, JobType):
                    raise PluginError(
                        f"plugin {name!r} (distribution {dist}) returned {item!r} from "
                        "pmq_register_job_types; expected pmq_core.JobType instances"
                    )
                owner = self._owners.get(item.name)
                if owner is not None:
                    owner_dist = origins.get(owner, (None, None))[0] or "not installed"
                    raise PluginError(
                        f"job type {item.name!r} is declared by two plugins: {owner!r} "
                        f"(distribution {owner_dist}) and {name!r} (distribution {dist}); "
                        "select one with --plugins or PMQ_PLUGINS"
                    )
                self._owners[item.name] = name
                self.job_types[item.name] = item
                declared.setdefault(name, []).append(item)
        self._collect_settings(hooks, origins)
        for plugin_name, plugin in self._pm.list_name_plugin():
            name = plugin_name or repr(plugin)
            distribution, version = origins.get(name, (None, None))
            implemented = tuple(sorted(h.name for h in self._pm.get_hookcallers(plugin) or []))
            sections = tuple(s for s, owner in self._section_owners.items() if owner == name)
            self.infos.append(PluginInfo(name, distribution, version, implemented, tuple(declared.get(name, ())),
                                         sections))

    def _collect_settings(self, hooks: Hooks, origins: dict[str, tuple[str | None, str | None]]) -> None:
        """Gather every plugin's settings declaration and check it (the
        values are read later, by :meth:`plugin_settings`)."""
        for call in hooks.register_settings():
            name = call.plugin
            dist = origins.get(name, (None, None))[0] or "not installed"
            try:
                result = call() or {}
            except Exception as exc:
                raise PluginError(f"plugin {name!r} (distribution {dist}) failed to declare its settings: "
                                  f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(result, dict):
                raise PluginError(f"plugin {name!r} (distribution {dist}) returned {shown(result)} from "
                                  "pmq_register_settings; expected a dict of section name to attrs class")
            for section, cls in result.items():
                problem = plugin_settings.declaration_problem(section, cls)
                if problem is not None:
                    raise PluginError(f"plugin {name!r} (distribution {dist}) declares settings pmq cannot read: "
                                      f"{problem}")
                owner = self._section_owners.get(section)
                if owner is not None:
                    raise PluginError(f"settings section {section!r} is declared by two plugins: {owner!r} and "
                                      f"{name!r} (distribution {dist})")
                self._section_owners[section] = name
                self.settings_classes[section] = cls
        clashes = plugin_settings.env_clashes(self.settings_classes)
        if clashes:
            raise PluginError(f"two plugins' settings would read the same environment variable: {'; '.join(clashes)}")

    def plugin_settings(self) -> dict[str, Any]:
        """Every declared settings section's values, read once (from the
        current directory's files and the environment, like
        :meth:`Settings.load`); one ConfigurationError naming every bad value
        of every section otherwise."""
        self.load()
        if self._settings is None:
            self._settings = plugin_settings.read(self.settings_classes)
        return self._settings

    def settings_of(self, section: str) -> Any:
        """The settings a plugin declared as ``section``: an instance of its class."""
        values = self.plugin_settings()
        if section not in values:
            raise PluginError(f"no loaded plugin declares the settings section {section!r}; declared: "
                              f"{', '.join(sorted(values)) or 'none'}")
        return values[section]

    def job_type(self, name: str) -> JobType | None:
        self.load()
        return self.job_types.get(name)
