"""Plugin settings: what a plugin reads, declared once and read like pmq's own.

A plugin declares its settings as an attrs class, returned by its
``pmq_register_settings`` hook under a section name (its entry-point name,
by convention: ``{"webhook": WebhookSettings}``). Each field is a setting,
with its type, its default and its docstring. It is read, lowest precedence
first, from the default, ``[tool.pmq.<section>]`` in pyproject.toml,
``[<section>]`` in pmq.toml and the environment variable
``PMQ_<SECTION>_<FIELD>`` (in capitals), and converted by the strict rules of
pmq's own settings (:mod:`pmq_core.config`). Every bad value of every section
is reported at once, as ``message @ section.field``.

A field declared with ``metadata={"secret": True}`` is never shown:
``pmq plugins`` prints it as ``***``, and its value (as read from any source,
even one a later source overrides) is added to what :mod:`pmq_core.redaction`
scrubs from pmq's output and logs.

A section that no loaded plugin declares is ignored, since one settings file
serves processes that load different plugins; inside a declared section, an
unknown key is refused (a misspelt setting must not be silently ignored).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from pmq_core.config import ENV_PREFIX, Settings, plugin_sections, structure_section
from pmq_core.errors import ConfigurationError, shown
from pmq_core.redaction import MASK, remember_secrets

#: What a setting's command-line option may be (``metadata={"option": ...}``).
OPTION = re.compile(r"--[a-z][a-z0-9-]{0,39}")

#: What a section name may be: it becomes part of environment variable names
#: (``PMQ_<SECTION>_<FIELD>``) and a TOML table's name.
SECTION = re.compile(r"[a-z][a-z0-9_]{0,31}")

_CORE_NAMES = {a.name for a in attrs.fields(Settings)}
T = TypeVar("T")


def env_name(section: str, field: str) -> str:
    """The environment variable of ``field`` in ``section``."""
    return f"{ENV_PREFIX}{section}_{field}".upper()


def is_secret(attribute: attrs.Attribute[Any]) -> bool:
    """Whether a setting is declared secret (``metadata={"secret": True}``)."""
    return bool(attribute.metadata.get("secret"))


def declaration_problem(section: Any, cls: Any) -> str | None:
    """What is wrong with declaring ``cls`` as the settings of ``section``,
    or None. Resolves the class's string annotations on the way."""
    if not isinstance(section, str) or not SECTION.fullmatch(section):
        return (f"section name {shown(section)} must be 1-32 lowercase letters, digits and '_', "
                "starting with a letter (it names PMQ_<SECTION>_* variables and a TOML table)")
    if section in _CORE_NAMES:
        return f"section name {section!r} is one of pmq's own settings"
    if not (isinstance(cls, type) and attrs.has(cls)):
        return f"section {section!r} must be an attrs class, not {shown(cls)}"
    try:
        attrs.resolve_types(cls)
    except Exception as exc:
        return f"the types of {cls.__name__} cannot be resolved: {type(exc).__name__}: {exc}"
    for attribute in attrs.fields(cls):
        option = attribute.metadata.get("option")
        if option is not None and not (isinstance(option, str) and OPTION.fullmatch(option)):
            return (f"the option of {section}.{attribute.name} must be '--' and 1-40 lowercase letters, digits "
                    f"and '-', not {shown(option)}")
    core = {f"{ENV_PREFIX}{name.upper()}" for name in _CORE_NAMES}
    taken = sorted(env_name(section, a.name) for a in attrs.fields(cls) if env_name(section, a.name) in core)
    if taken:
        return f"section {section!r} would read {', '.join(taken)}, which pmq reads for its own settings"
    return None


def env_clashes(declared: Mapping[str, type]) -> list[str]:
    """Environment variables two sections would both read (``email`` with
    ``x_y`` and ``email_x`` with ``y``), each with the two settings."""
    seen: dict[str, str] = {}
    clashes = []
    for section, cls in declared.items():
        for attribute in attrs.fields(cls):
            variable, setting = env_name(section, attribute.name), f"{section}.{attribute.name}"
            if variable in seen:
                clashes.append(f"{variable} ({seen[variable]} and {setting})")
            seen[variable] = setting
    return clashes


def read(declared: Mapping[str, type], directory: Path | None = None,
         environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each declared section's settings, read from the files in
    ``directory`` (default: the current one) and the environment; one
    ConfigurationError naming every bad value otherwise."""
    environ = os.environ if environ is None else environ
    data: dict[str, dict[str, Any]] = {section: {} for section in declared}
    problems: list[str] = []
    secrets: list[str] = []
    for source, sections in plugin_sections(directory):
        for section, table in sections.items():
            if section not in declared:
                continue
            names = attrs.fields_dict(declared[section])
            unknown = sorted(set(table) - set(names))
            if unknown:
                where = f"[tool.pmq.{section}] in pyproject.toml" if source == "pyproject.toml" else \
                    f"[{section}] in pmq.toml"
                problems.append(f"{where}: unknown setting(s) {', '.join(unknown)}; known settings are "
                                f"{', '.join(sorted(names))}")
            data[section].update({key: value for key, value in table.items() if key in names})
            secrets += [str(value) for key, value in table.items() if key in names and is_secret(names[key])]
    for section, cls in declared.items():
        for attribute in attrs.fields(cls):
            value = environ.get(env_name(section, attribute.name))
            if value is not None:
                data[section][attribute.name] = value
                secrets += [value] if is_secret(attribute) else []
    remember_secrets(secrets)
    values: dict[str, Any] = {}
    for section, cls in declared.items():
        try:
            values[section] = structure_section(data[section], cls, section)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigurationError(f"invalid plugin settings: {'; '.join(problems)}")
    return values


def load_plugin_settings(section: str, cls: type[T], directory: Path | None = None,
                         environ: Mapping[str, str] | None = None) -> T:
    """The settings of one ``section``, read now as a worker would read them:
    for code that runs a plugin's handlers outside a worker (a script, a
    test, a plugin's fallback before any worker gave it its settings)."""
    problem = declaration_problem(section, cls)
    if problem is not None:
        raise ConfigurationError(problem)
    value: T = read({section: cls}, directory, environ)[section]
    return value


@attrs.frozen
class SettingOption:
    """A setting declared with ``metadata={"option": "--name"}``: an option of
    the serving commands, whose value is put in the setting's environment
    variable (the highest source, inherited by the processes it starts)."""

    option: str
    env: str
    setting: str  # section.field
    help: str


def options(declared: Mapping[str, type]) -> list[SettingOption]:
    """The command-line options the declared settings ask for."""
    found = []
    for section, cls in declared.items():
        for attribute in attrs.fields(cls):
            option = attribute.metadata.get("option")
            if option:
                env = env_name(section, attribute.name)
                extra = attribute.metadata.get("help")
                found.append(SettingOption(option, env, f"{section}.{attribute.name}",
                                           (f"{extra} " if isinstance(extra, str) else "") + f"(sets {env})"))
    return found


def describe(section: str, value: Any) -> list[dict[str, Any]]:
    """Each setting of ``section`` as ``pmq plugins`` shows it: name,
    environment variable, type, and current value (``***`` for a secret that
    is set)."""
    rows = []
    for attribute in attrs.fields(type(value)):
        current = getattr(value, attribute.name)
        if is_secret(attribute) and current is not None:
            current = MASK
        elif current is not None and not isinstance(current, (bool, int, float, str)):
            current = str(current)
        rows.append({"name": attribute.name, "env": env_name(section, attribute.name),
                     "type": _type_name(attribute.type), "secret": is_secret(attribute), "value": current})
    return rows


def _type_name(type_: Any) -> str:
    return type_.__name__ if isinstance(type_, type) else str(type_).replace("typing.", "")
