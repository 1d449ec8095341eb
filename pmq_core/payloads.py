"""Payloads: JSON objects, small, checked before anything is written.

A payload is stored as ``jsonb`` and handed back to a handler as a dict or, when
the job type declares a payload class, as an instance of it. Nothing here can
make code run: payloads are data, never pickles.
"""

from __future__ import annotations

import collections.abc
import json
import math
import re
import types
import typing
from typing import Any

import attrs
import cattrs
import cattrs.cols
import cattrs.v

from pmq_core.errors import SHOWN_CHARS, PayloadError, shown

#: Deepest nesting a payload may have: the object itself is level 1 and each
#: object or array inside adds one. Checked before encoding, the same way for
#: the sync and the async client (the encoder's own limit is the interpreter's
#: recursion limit, which depends on how deep the caller's stack already is).
MAX_DEPTH = 32
#: Compact JSON that refuses NaN and infinities; one encoder for every call
#: (json.dumps with options builds a new one each time).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
#: A NUL character as JSON escapes it (an odd number of backslashes before
#: u0000): jsonb refuses it, so it must be caught before the write.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class _Refused(Exception):
    """A problem found while walking a payload, and the path down to it,
    filled in on the way back up."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []

    def where(self) -> str:
        return "payload" + "".join(reversed(self.path))


def _step(key: str) -> str:
    return f".{key}" if key.isidentifier() and len(key) <= SHOWN_CHARS else f"[{shown(key)}]"


def _walk(value: Any, depth: int, ancestors: set[int]) -> None:
    """Raise _Refused at the first thing JSON cannot hold as it is: a NaN or
    infinity, a key that is not a string (``{1: "a", "1": "b"}`` would lose
    one), nesting beyond MAX_DEPTH, or a container that contains itself."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused("is NaN or infinite, which JSON cannot hold")
        return
    if not isinstance(value, (dict, list, tuple)):
        return
    if id(value) in ancestors:
        raise _Refused("contains itself, which JSON cannot hold")
    if depth > MAX_DEPTH:
        raise _Refused(f"is nested more than {MAX_DEPTH} levels deep (the limit for a payload)")
    ancestors.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused(f"has the key {shown(key)}, which is not a string: JSON keys are strings, "
                               "so it could collide with another key")
            try:
                _walk(item, depth + 1, ancestors)
            except _Refused as exc:
                exc.path.append(_step(key))
                raise
    else:
        for index, item in enumerate(value):
            try:
                _walk(item, depth + 1, ancestors)
            except _Refused as exc:
                exc.path.append(f"[{index}]")
                raise
    ancestors.discard(id(value))


# -- payload classes: JSON types, checked strictly -------------------------------

_JSON_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
               (dict, "an object"), ((list, tuple), "an array"), (type(None), "null"))


def _kind(value: Any) -> str:
    """What JSON calls ``value``, for an error message."""
    for kinds, name in _JSON_KINDS:
        if isinstance(value, kinds):
            return name
    return type(value).__name__


class WrongType(TypeError):
    """A payload field holds a JSON value of another type than its class
    declares; cattrs' default would have converted it silently."""

    def __init__(self, expected: str, value: Any) -> None:
        got = "null" if value is None else f"{_kind(value)} {shown(value)}"
        super().__init__(f"expected {expected}, got {got}")


def _integer(value: Any, _type: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType("an integer", value)
    return value


def _number(value: Any, _type: Any) -> float:
    """A float field takes any JSON number: JSON has one number type, and
    producers in other languages write ``3`` for ``3.0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WrongType("a number", value)
    try:
        return float(value)
    except OverflowError:
        raise WrongType("a number a float can hold", value) from None


def _exact(type_: type, expected: str) -> Any:
    def structure(value: Any, _type: Any) -> Any:
        if not isinstance(value, type_):
            raise WrongType(expected, value)
        return value
    return structure


def _of_kind(types: type | tuple[type, ...], expected: str, inner: Any, then: Any = None) -> Any:
    """``inner`` (cattrs' own hook for a container type), after checking that
    the value is the JSON container it needs: cattrs alone would build a
    list from a string's characters or a dict's keys."""
    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, types):
            raise WrongType(expected, value)
        built = inner(value, type_)
        return then(built) if then else built
    return structure


def _sequence(type_: Any, converter: cattrs.Converter) -> Any:
    if typing.get_origin(type_) is tuple:
        return _of_kind((list, tuple), "an array", cattrs.cols.homogenous_tuple_structure_factory(type_, converter))
    return _of_kind((list, tuple), "an array", cattrs.cols.list_structure_factory(type_, converter))


def _is_hetero_tuple(type_: Any) -> bool:
    """``tuple[int, str]``: fixed length, a type per position."""
    return typing.get_origin(type_) is tuple and not cattrs.cols.is_sequence(type_)


def _set(type_: Any, converter: cattrs.Converter) -> Any:
    """Sets travel as JSON arrays: built from a list of their element type."""
    items = types.GenericAlias(list, typing.get_args(type_) or (Any,))
    frozen = cattrs.cols.is_frozenset(type_) or cattrs.cols.is_abstract_set(type_)
    return _of_kind((list, tuple), "an array", converter.get_structure_hook(items),
                    frozenset if frozen else set)


def _mapping(type_: Any, converter: cattrs.Converter) -> Any:
    """cattrs' own hook for a mapping type, checked, and built without
    ``Converter.gen_structure_mapping``: that one registers its unchecked
    hook for the type, which the converter then hands out instead of this
    one as soon as any later registration clears its cache."""
    origin = typing.get_origin(type_) or type_
    to = dict if origin in (collections.abc.Mapping, collections.abc.MutableMapping) else origin
    return _of_kind(dict, "an object", cattrs.cols.mapping_structure_factory(type_, converter, to))


def _strict_converter() -> cattrs.Converter:
    """The converter for payload classes: each JSON type only where the class
    declares it (an int field refuses ``2.9``, ``true`` and ``"12"``), typos
    refused by forbid_extra_keys. The one widening is documented in _number."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _integer)
    converter.register_structure_hook(float, _number)
    converter.register_structure_hook(str, _exact(str, "a string"))
    converter.register_structure_hook(bool, _exact(bool, "a boolean"))
    converter.register_structure_hook(type(None), _exact(type(None), "null"))
    converter.register_structure_hook_factory(cattrs.cols.is_sequence, _sequence)
    converter.register_structure_hook_factory(
        _is_hetero_tuple, lambda t: _of_kind((list, tuple), "an array", converter.gen_structure_hetero_tuple(t)))
    converter.register_structure_hook_factory(cattrs.cols.is_any_set, _set)
    converter.register_unstructure_hook_factory(
        cattrs.cols.is_any_set, lambda t: lambda value: [converter.unstructure(item) for item in value])
    converter.register_structure_hook_factory(cattrs.cols.is_mapping, _mapping)
    converter.register_structure_hook_factory(
        attrs.has, lambda t: _of_kind(dict, "an object", converter.gen_structure_attrs_fromdict(t)))
    return converter


_converter = _strict_converter()


def _describe(exc: BaseException, type_: type | None) -> str:
    """One problem as a line: a wrong type or a payload class's own
    validator in its own words (cattrs alone would drop them), else cattrs'."""
    if isinstance(exc, WrongType):
        return str(exc)
    message = cattrs.v.format_exception(exc, type_)
    detail = str(exc)
    if isinstance(exc, (ValueError, TypeError)) and detail and detail not in message:
        return f"{message} ({shown(detail)[1:-1]})"
    return message


# -- checking and encoding -----------------------------------------------------------


def _plain(payload: Any, payload_class: type | None, queue: str) -> Any:
    """The payload as plain data, before any check of its contents."""
    if payload_class is not None and not isinstance(payload, (dict, payload_class)):
        raise PayloadError(f"invalid payload for {queue!r}: expected a dict or a {payload_class.__name__}, "
                           f"got {type(payload).__name__}")
    if not attrs.has(type(payload)):
        return payload
    try:
        return _converter.unstructure(payload)
    except RecursionError:
        raise PayloadError(f"invalid payload for {queue!r}: contains itself or is nested more than "
                           f"{MAX_DEPTH} levels deep") from None


def to_json(payload: Any, *, queue: str, payload_class: type | None, limit: int) -> str:
    """The payload as compact JSON text, or PayloadError naming the problem.

    ``payload`` is a dict, or an instance of ``payload_class``. Its tree is
    checked first (string keys, at most MAX_DEPTH levels, no NaN, no cycle);
    then, with a payload class, a dict is structured into it strictly, so
    that a typo or a wrong type is caught here rather than in the worker.
    """
    data = _plain(payload, payload_class, queue)
    if not isinstance(data, dict):
        raise PayloadError(f"invalid payload for {queue!r}: must be a JSON object (a dict), got {type(data).__name__}")
    try:
        _walk(data, 1, set())
    except _Refused as exc:
        raise PayloadError(f"invalid payload for {queue!r}: {exc.where()} {exc.problem}") from None
    if payload_class is not None and isinstance(payload, dict):
        try:
            structure(payload, payload_class)
        except PayloadError as exc:
            raise PayloadError(f"invalid payload for {queue!r}: {exc}") from None
    try:
        text = _encode(data)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"invalid payload for {queue!r}: not JSON-serialisable: {shown(str(exc))[1:-1]}") from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise PayloadError(f"invalid payload for {queue!r}: contains a NUL character, which PostgreSQL cannot store")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError(f"invalid payload for {queue!r}: contains a lone surrogate, "
                           "which is not valid unicode") from None
    if size > limit:
        raise PayloadError(
            f"invalid payload for {queue!r}: {size} bytes is over the limit of {limit} bytes; "
            "store large data elsewhere and put its key in the payload"
        )
    return text


#: Characters of an unreadable payload's text kept to show what it was.
UNREADABLE_PREFIX = 200


@attrs.frozen
class UnreadablePayload:
    """A stored payload Python cannot decode: valid ``jsonb`` that holds an
    integer of more than 4,300 digits, or nests deeper than Python's
    recursion limit. PostgreSQL cannot refuse such a value by a simple
    CHECK, so pmq reads it back as this marker instead of failing the whole
    read: the worker ends its job dead, and listings show it. ``prefix`` is
    the start of the stored text."""

    reason: str
    prefix: str

    def __str__(self) -> str:
        return f"<unreadable payload ({self.reason}): {self.prefix}>"


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON read from PostgreSQL; a value Python cannot decode becomes
    an :class:`UnreadablePayload` rather than an exception."""
    raw = bytes(data) if isinstance(data, memoryview) else data
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
        prefix = text[:UNREADABLE_PREFIX] + ("…" if len(text) > UNREADABLE_PREFIX else "")
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        return UnreadablePayload(reason, prefix)


def structure(data: dict[str, Any], payload_class: type | None) -> Any:
    """A payload as its handler receives it, or PayloadError naming every
    field that does not fit (the same rules at enqueue and in the worker, so
    a row written by plain SQL gets no looser treatment)."""
    if payload_class is None:
        return data
    try:
        return _converter.structure(data, payload_class)
    except cattrs.BaseValidationError as exc:
        raise PayloadError("; ".join(cattrs.transform_error(exc, path="payload", format_exception=_describe))) from None
    except (TypeError, ValueError) as exc:
        raise PayloadError(_describe(exc, payload_class)) from None
