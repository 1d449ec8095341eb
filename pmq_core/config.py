"""Settings: what pmq connects to and how it behaves.

Read, lowest precedence first, from the defaults below, ``[tool.pmq]`` in
``pyproject.toml``, ``pmq.toml`` (both in the current directory) and ``PMQ_*``
environment variables. Every field can be set in each place under its own
name (``PMQ_`` + the name in capitals for the environment). A bad value is
reported by its name and source, with everything else that is wrong.

A table in those files (``[tool.pmq.webhook]``, ``[webhook]`` in pmq.toml)
is a plugin's section: it is left to :mod:`pmq_core.plugin_settings`, which
reads it with the rules written here.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
import cattrs
import cattrs.v
import psycopg
from psycopg.conninfo import conninfo_to_dict
from redis.connection import parse_url

from pmq_core.errors import ConfigurationError, shown
from pmq_core.redaction import passwords_in, redact_url, scrub

ENV_PREFIX = "PMQ_"
T = TypeVar("T")

#: The Redis topologies pmq runs on (the ``redis_mode`` setting).
REDIS_MODES = ("standalone", "cluster", "sentinel")
#: The scheme of a ``redis_url`` that names Sentinels rather than a Redis.
SENTINEL_SCHEME = "redis+sentinel"


def split_hosts(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A Redis URL naming several hosts (``redis://[user:password@]h1:p1,h2:p2/0``,
    nodes of one cluster) as the URL of its first host alone, and the
    others' (host, port); ValueError when one is not ``host:port``."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, rest = rest.rpartition("@")
    hosts, slash, path = rest.partition("/")
    first, *others = hosts.split(",")
    nodes = []
    for host in others:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"each further cluster node must be host:port, not {shown(host)}")
        nodes.append((name.strip("[]"), int(port)))
    return f"{scheme}{separator}{userinfo}{at}{first}{slash}{path}", nodes


#: The options a Sentinel URL's query may hold: the Sentinels' own
#: credentials, when they require one (``requirepass`` in sentinel.conf).
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@attrs.frozen
class SentinelAddress:
    """What a ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
    [?sentinel_password=...]`` URL names: the Sentinels to ask, the service
    (the primary's name in their configuration), the database and
    credentials to use on it, and the Sentinels' own credentials if any."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelAddress:
        """The address, or ValueError saying what is missing."""
        scheme, _, rest = url.partition("://")
        if scheme.lower() != SENTINEL_SCHEME:
            raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
        userinfo, _, rest = rest.rpartition("@")
        rest, _, query = rest.partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - set(SENTINEL_OPTIONS))
        if unknown:
            raise ValueError(f"a Sentinel URL takes only {' and '.join(SENTINEL_OPTIONS)} after '?', "
                             f"not {shown(unknown[0])}")
        hosts, _, path = rest.partition("/")
        sentinels = []
        for host in hosts.split(","):
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"each Sentinel must be host:port, not {shown(host)}")
            sentinels.append((name.strip("[]"), int(port)))
        service, _, db = path.partition("/")
        if not service:
            raise ValueError("the path must name the service: redis+sentinel://host:26379/<service>[/<db>]")
        if db and not db.isdigit():
            raise ValueError(f"the database after the service must be a number, not {shown(db)}")
        username, _, password = userinfo.partition(":")
        return cls(sentinels, unquote(service), int(db or 0), unquote(username) or None,
                   unquote(password) or None, options.get("sentinel_username") or None,
                   options.get("sentinel_password") or None)


def _default_data_dir() -> Path:
    """Where embedded servers keep their data: ``$XDG_DATA_HOME/pmq`` or
    ``~/.local/share/pmq``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "pmq"


def _redis_mode(settings: Any, _attribute: attrs.Attribute[Any], mode: str) -> None:
    """A known mode, and a URL of the form it needs: Sentinels for sentinel,
    one Redis (any node of the cluster) otherwise."""
    if mode not in REDIS_MODES:
        raise ValueError(f"redis_mode must be one of {', '.join(REDIS_MODES)}, not {shown(mode)}")
    url = settings.redis_url
    if url is None:
        if mode != "standalone":
            raise ValueError(f"redis_mode {mode} needs redis_url: embedded servers are a single Redis")
        return
    names_sentinels = url.lower().startswith(SENTINEL_SCHEME + "://")
    if (mode == "sentinel") != names_sentinels:
        wanted = (f"a {SENTINEL_SCHEME}://host:port[,host:port...]/<service> URL" if mode == "sentinel"
                  else "a redis://, rediss:// or unix:// URL (of any one node, for a cluster)")
        raise ValueError(f"redis_mode {mode} needs {wanted} in redis_url")
    if mode == "sentinel":
        return
    first, others = split_hosts(url)
    if others and mode != "cluster":
        raise ValueError("redis_url names several hosts: only redis_mode cluster takes several (its nodes)")
    if mode == "cluster" and parse_url(first).get("db", 0) != 0:  # type: ignore[no-untyped-call]
        raise ValueError("a Redis Cluster has database 0 only: end redis_url with /0 or no database")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, not {shown(value)}")


#: What a Redis key prefix may hold: no spaces or control characters (they
#: break tools that print keys), no glob characters (``*?[]``, which would
#: turn a SCAN pattern into a wildcard) and no braces (the prefix must not
#: start a hash tag: queue names are the tags). Matched with ``fullmatch``.
KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _key_prefix(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not KEY_PREFIX.fullmatch(value):
        raise ValueError(f"key_prefix must be 1-64 letters, digits and '_.:-' (like 'pmq:' or 'myapp:pmq:'), "
                         f"not {shown(value)}")


def _rescue_window(settings: Any, rescue_after: float) -> None:
    """A live worker must get at least two heartbeats in per rescue window,
    or one late heartbeat would get its running jobs taken from it."""
    if settings.heartbeat_interval * 2 > rescue_after:
        raise ValueError(f"rescue_after ({rescue_after:g}s) must be at least twice heartbeat_interval "
                         f"({settings.heartbeat_interval:g}s)")


_SCHEMES = {"database_url": ("postgresql", "postgres"), "database_direct_url": ("postgresql", "postgres"),
            "redis_url": ("redis", "rediss", "unix", SENTINEL_SCHEME)}
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _server_url(instance: Any, attribute: attrs.Attribute[Any], url: str | None) -> None:
    """Refuse a server URL that PostgreSQL's or Redis' client would read
    differently from pmq's redaction, or not at all, before any library sees
    it: libraries quote a URL they cannot parse back in their errors, and a
    password with an unencoded ``@``, ``/``, ``?`` or ``#`` is split between
    user, host and path in ways that differ from one library to the next.
    The message never quotes the URL."""
    if url is None:
        return
    problem = _url_problem(attribute.name, url)
    if problem is not None:
        name = attribute.name
        message = f"{name} ({ENV_PREFIX}{name.upper()}, shown as {redact_url(url)}) {problem}"
        raise ValueError(scrub(message, passwords_in(url)))


def _url_problem(name: str, url: str) -> str | None:
    schemes = _SCHEMES[name]
    scheme, found, rest = url.partition("://")
    if not found and name != "redis_url":  # a libpq key=value string: libpq's own rules
        return _library_problem(name, url)
    if any(not (" " < c <= "~") for c in url):
        return "holds a space, a control or a non-ASCII character: percent-encode it (a space is %20)"
    if _PERCENT.search(url):
        return "holds a '%' that is not followed by two hex digits: write a literal '%' as %25"
    if scheme.lower() not in schemes:
        other = " or a libpq key=value connection string" if name != "redis_url" else ""
        return f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}{other}"
    if rest.count("@") > 1:
        return "holds more than one '@': percent-encode an '@' in the user name or password as %40"
    if "#" in rest:
        return "holds a '#': percent-encode a '#' in the password as %23"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "cannot be parsed: check the brackets around an IPv6 address"
    if "@" in rest and "@" not in parts.netloc and scheme.lower() != SENTINEL_SCHEME:
        return ("holds an '@' after the host: percent-encode a '/', '?' or '@' in the password "
                "(as %2F, %3F, %40)")
    return _library_problem(name, url)


def _library_problem(name: str, url: str) -> str | None:
    """What the server's own client library finds wrong in ``url``, with its
    passwords scrubbed from the library's words."""
    try:
        if name == "redis_url" and url.lower().startswith(SENTINEL_SCHEME):
            SentinelAddress.parse(url)
            return None
        if name == "redis_url":
            parse_url(split_hosts(url)[0])  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            return None
        ports = conninfo_to_dict(url).get("port") or ""
    except (ValueError, psycopg.ProgrammingError) as exc:
        reason = scrub(str(exc).replace(url, redact_url(url)), passwords_in(url)).strip().splitlines()
        return f"cannot be parsed: {reason[0] if reason else type(exc).__name__}"
    if not all(port.isdigit() or not port for port in str(ports).split(",")):
        return "has a port that is not a number"
    return None


@attrs.frozen(kw_only=True)
class Settings:
    """Every setting of pmq, with its default."""

    database_url: str | None = attrs.field(default=None, repr=lambda url: repr(redact_url(url)), validator=_server_url)
    """PostgreSQL URL (or libpq key=value string). Unset (with redis_url unset
    too): embedded servers. Several hosts (``host=a,b
    target_session_attrs=read-write``) follow a failover to the new primary."""
    database_direct_url: str | None = attrs.field(default=None, repr=lambda url: repr(redact_url(url)),
                                                  validator=_server_url)
    """A URL of the same database that bypasses a transaction-pooling proxy
    (PgBouncer's ``pool_mode = transaction``) in ``database_url``, for what
    needs a session of its own: the migrator's leadership lock and its
    LISTEN, and the schema's upgrade lock. Set, it also tells pmq that
    ``database_url`` is pooled: pmq then prepares no statement and sets no
    session parameter there. Unset: ``database_url`` serves for both."""
    redis_url: str | None = attrs.field(default=None, repr=lambda url: repr(redact_url(url)), validator=_server_url)
    """Redis URL. Unset (with database_url unset too): embedded servers. With
    ``redis_mode = "cluster"``, one or more nodes of the cluster
    (``redis://[:password@]host:port[,host:port...]/0``); with
    ``"sentinel"``, ``redis+sentinel://[:password@]host:port[,host:port...]/<service>[/<db>]``:
    the Sentinels and the name of the primary they watch."""
    redis_mode: str = attrs.field(default="standalone", validator=_redis_mode)
    """The Redis topology: ``standalone`` (one Redis, or a proxy in front of
    several), ``cluster`` (Redis Cluster, through redis-py's cluster client)
    or ``sentinel`` (a primary whose replicas Sentinel promotes, through
    redis-py's Sentinel client). See the deployment guide."""
    plugins: tuple[str, ...] | None = None
    """Entry-point names of the plugins to load; None loads every installed
    one. An empty list (``PMQ_PLUGINS=``, ``plugins = ""`` or ``[]``) means
    the same as unset, as an empty value does for every optional setting: a
    process that loads no plugin has no job type to run or to check."""
    key_prefix: str = attrs.field(default="pmq:", validator=_key_prefix)
    """Prefix of every Redis key pmq touches, so deployments can share a Redis."""
    data_dir: Path = attrs.field(factory=_default_data_dir)
    """Where embedded servers keep their data."""
    max_payload_bytes: int = attrs.field(default=65536, validator=_positive)
    """Largest payload accepted, as compact JSON in UTF-8."""
    concurrency: int = attrs.field(default=10, validator=_positive)
    """Jobs one worker process runs at once."""
    prefetch: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    """Jobs a worker claims ahead, beyond those it runs, so that a quick job's
    slot finds the next job already claimed instead of waiting a round trip
    for it. Default (unset): sized by the worker from its measured job and
    database round durations, from none for long jobs up to four times
    ``concurrency`` for quick ones. A job claimed ahead waits for a slot of
    this worker even when another is idle; 0 turns claiming ahead off."""
    migrate_batch: int = attrs.field(default=500, validator=_positive)
    """Most jobs the migrator moves to Redis in one round trip."""
    redis_depth: int = attrs.field(default=2000, validator=_positive)
    """Most jobs kept waiting in Redis per queue; the rest wait in PostgreSQL,
    where a later job of higher priority can still overtake them."""
    poll_interval: float = attrs.field(default=2.0, validator=_positive)
    """Seconds between migrator polls when no notification arrives."""
    heartbeat_interval: float = attrs.field(default=5.0, validator=_positive)
    """Seconds between a worker's heartbeats."""
    rescue_after: float = attrs.field(default=30.0, validator=[_positive, lambda s, a, v: _rescue_window(s, v)])
    """Seconds without a heartbeat after which a worker's jobs are rescued."""
    max_rescues: int = attrs.field(default=5, validator=_positive)
    """Rescues after which a job ends dead ("its worker died N times while
    holding it"). A rescue gives the attempt back, since it cannot tell the
    job that killed its worker from the innocent ones beside it, and makes
    the job a suspect that workers run alone in a child process. The first
    rescue counts, and each one after that in which the job was running
    (not merely waiting for its turn): the bound for a job that kills even
    the worker isolating it."""
    dispatch_on_enqueue: bool = True
    """Hand a job that is due now to Redis as soon as its enqueue commits,
    instead of waiting for the migrator: one commit and one wake-up less on
    the way to a worker. Applies to enqueues on pmq's own connection that
    are written by INSERT: fewer than 64 jobs, or any number with unique
    keys (a larger batch without them goes in by COPY, as queued jobs the
    migrator hands over); a job whose message the producer could not push
    (Redis down, or the producer died right after the commit) is handed over
    by the migrator after redispatch_after."""
    status_mirror: bool = True
    """Keep a Redis hash per live job (``<prefix>{queue}:job:<id>``) with its
    status, attempt and worker, for real-time views. pmq itself never reads
    it (PostgreSQL is the record), and writing it is about a tenth of a
    worker's CPU per job: turn it off where nothing reads it. Set it alike
    on every process, producers included: a producer that hands jobs over
    writes the first state of their hashes."""
    redispatch_after: float = attrs.field(default=5.0, validator=_positive)
    """Seconds a job may sit in migrated_to_redis before pmq checks that its
    Redis message still exists (and migrates it again if not)."""
    shutdown_grace: float = attrs.field(default=30.0, validator=_positive)
    """Seconds a stopping worker lets its running jobs finish."""
    retention_completed_days: int = attrs.field(default=183, validator=_positive)
    """Age after which completed and cancelled jobs are deleted."""
    retention_failed_days: int = attrs.field(default=365, validator=_positive)
    """Age after which failed (dead) jobs are deleted."""
    retention_logs_days: int = attrs.field(default=90, validator=_positive)
    """Age after which job_logs rows are deleted."""

    @property
    def session_database_url(self) -> str | None:
        """The URL for connections that need a session: the direct one if set."""
        return self.database_direct_url or self.database_url

    @property
    def database_pooled(self) -> bool:
        """Whether ``database_url`` goes through a transaction pooler."""
        return self.database_direct_url is not None

    @property
    def embedded(self) -> bool:
        """True when pmq must start its own servers."""
        return self.database_url is None and self.redis_url is None

    @classmethod
    def load(cls, directory: Path | None = None, environ: Mapping[str, str] | None = None,
             **overrides: Any) -> Settings:
        """Settings from files in ``directory`` (default: the current one),
        the environment, then ``overrides`` (values that are None are ignored)."""
        layers = _layers(directory, environ)
        given = {k: v for k, v in overrides.items() if v is not None}
        if given:
            layers.append(("arguments", given))
        merged: dict[str, Any] = {}
        for source, layer in layers:
            _check_layer(source, layer)
            merged.update(layer)
        return structure_settings(merged)


_FIELD_NAMES = {a.name for a in attrs.fields(Settings)}


def _layers(directory: Path | None, environ: Mapping[str, str] | None,
            lenient: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """Each source of settings with what it sets, lowest precedence first;
    ``lenient`` skips a file that cannot be read instead of refusing it."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    for _name, source, layer in _file_layers(directory, lenient):
        layer = {key: value for key, value in layer.items() if not _is_section(key, value)}
        if layer:
            layers.append((source, layer))
    env = {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower() in _FIELD_NAMES
    }
    if env:
        layers.append(("environment (PMQ_*)", env))
    return layers


def _file_layers(directory: Path | None, lenient: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """``[tool.pmq]`` of pyproject.toml and the whole of pmq.toml, plugin
    sections included, each with its file's name and a description of it."""
    directory = directory or Path.cwd()
    layers: list[tuple[str, str, dict[str, Any]]] = []
    for name, source in (("pyproject.toml", "[tool.pmq] in pyproject.toml"), ("pmq.toml", "pmq.toml")):
        path = directory / name
        if not path.is_file():
            continue
        try:
            layer = _read_toml(path)
        except ConfigurationError:
            if lenient:
                continue
            raise
        if name == "pyproject.toml":
            tool = layer.get("tool")
            layer = tool.get("pmq", {}) if isinstance(tool, dict) else {}
        if isinstance(layer, dict) and layer:
            layers.append((name, source, layer))
    return layers


def _is_section(key: str, value: Any) -> bool:
    """Whether ``key = value`` of a settings file is a plugin's section: a
    table that is not one of pmq's own settings."""
    return isinstance(value, dict) and key not in _FIELD_NAMES


def plugin_sections(directory: Path | None = None, lenient: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The plugin sections of each settings file, lowest precedence first:
    ``("pyproject.toml", {"webhook": {...}})``, then ``("pmq.toml", ...)``."""
    return [(name, {key: value for key, value in layer.items() if _is_section(key, value)})
            for name, _source, layer in _file_layers(directory, lenient)]


def configured_urls(directory: Path | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every server URL set in any source, even one a later source overrides
    and even when the settings are invalid: the ``pmq`` command hides their
    passwords in everything it prints."""
    return [value for _source, layer in _layers(directory, environ, lenient=True) if isinstance(layer, dict)
            for name in _SCHEMES if isinstance(value := layer.get(name), str)]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path.name}: cannot read it: {exc}") from None


def _check_layer(source: str, layer: dict[str, Any]) -> None:
    unknown = sorted(set(layer) - _FIELD_NAMES)
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings are {', '.join(sorted(_FIELD_NAMES))}"
        )


def _split_names(value: Any, _type: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    return names or None


def _float(value: Any, _type: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {shown(value)}") from None


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _bool(value: Any, _type: Any) -> bool:
    """A strict boolean: True/False, or their usual spellings in a string
    (``bool("false")`` would be True)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"expected true or false, got {shown(value)}")


def _int(value: Any, _type: Any) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"expected a whole number, got {shown(value)}") from None


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(tuple[str, ...] | None, _split_names)
_converter.register_structure_hook(float, _float)
_converter.register_structure_hook(int, _int)
_converter.register_structure_hook(bool, _bool)
_converter.register_structure_hook(Path, lambda v, _t: Path(os.path.expanduser(str(v))))
_converter.register_structure_hook(str | None, lambda v, _t: None if v in (None, "") else str(v))
_converter.register_structure_hook(int | None, lambda v, _t: None if v in (None, "") else _int(v, int))


def _optional(type_: Any) -> bool:
    return typing.get_origin(type_) in (typing.Union, types.UnionType) and type(None) in typing.get_args(type_)


def _structure_optional(type_: Any) -> Any:
    """``X | None``: an empty value (``PMQ_NAME=``) is None, as unset."""
    inner: Any = typing.Union[tuple(arg for arg in typing.get_args(type_) if arg is not type(None))]  # noqa: UP007

    def structure(value: Any, _type: Any) -> Any:
        return None if value in (None, "") else _section_converter.structure(value, inner)

    return structure


#: The converter of plugin sections: pmq's own rules, and for every
#: optional type an empty value meaning unset.
_section_converter = _converter.copy()
_section_converter.register_structure_hook_factory(_optional, _structure_optional)


def _describe(exc: BaseException, type_: Any) -> str:
    """A validator's own message (it names the setting), else cattrs' wording."""
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def structure_settings(data: dict[str, Any]) -> Settings:
    """Build :class:`Settings` from plain data, reporting every bad field."""
    try:
        return _converter.structure(data, Settings)
    except cattrs.BaseValidationError as exc:
        lines = "; ".join(cattrs.transform_error(exc, path="settings", format_exception=_describe))
        raise ConfigurationError(f"invalid settings: {lines}") from None
    except ValueError as exc:
        raise ConfigurationError(f"invalid settings: {exc}") from None


def structure_section(data: dict[str, Any], cls: type[T], path: str) -> T:
    """``data`` as an instance of the attrs class ``cls`` by the rules of
    pmq's own settings; ValueError listing every bad field as ``message @
    path.field`` otherwise."""
    try:
        return _section_converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        raise ValueError("; ".join(cattrs.transform_error(exc, path=path, format_exception=_describe))) from None
    except (ValueError, TypeError) as exc:  # an attrs validator's own message, which names the field
        raise ValueError(f"{exc} @ {path}") from None
