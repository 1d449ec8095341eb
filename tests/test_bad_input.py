"""Bad input, generated: whatever is passed to enqueue or enqueue_many, the
call either stores exactly what was asked (and it reads back) or raises one
PmqError subclass, and never writes part of a call."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmq_core import JobType, PmqError, hookimpl
from pmq_core.client import INT32
from tests.reliability_support import scalar

EXAMPLES = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@attrs.frozen
class Typed:
    n: int
    label: str = ""


class Plugin:
    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="free", handler=lambda job: None),
                JobType(name="typed", handler=lambda job: None, payload=Typed)]


# -- strategies ------------------------------------------------------------------

#: Any code point, lone surrogates and NUL included.
odd_text = st.text(st.characters(codec=None, categories=None), max_size=12) | st.sampled_from(
    ["\x00", "a\x00b", "\ud800", "\udfff x", "\\u0000", "\\\\u0000", "'; DROP TABLE jobs; --", "%s", "%(ids)s",
     "{free}", "\u202e", "\ufeff", "𝔘𝔫𝔦"])
numbers = st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True, allow_infinity=True)
json_like = st.recursive(
    st.none() | st.booleans() | numbers | odd_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4),
    max_leaves=12,
)
payloads = (
    st.dictionaries(odd_text, json_like, max_size=5)
    | st.builds(lambda n, label: {"n": n, "label": label}, numbers, odd_text)
    | st.builds(Typed, st.integers(min_value=-5, max_value=5))
    | st.integers(min_value=60_000, max_value=70_000).map(lambda size: {"blob": "x" * size})
    | json_like
    | st.binary(max_size=8)
    | st.sets(st.integers(), max_size=2)
    | st.just({"nested": {1, 2}})
    | st.just({(1, 2): "tuple key"})
    | st.just({"when": datetime(2020, 1, 1)})
)
queues = (
    st.sampled_from(["free", "typed", "free", "typed", "nope", "FREE", "free ", " free", "free\x00", "free;--",
                     "q'; DELETE FROM jobs; --", "{free}", "free*", "a" * 101, ""])
    | odd_text | st.integers() | st.none() | st.binary(max_size=4)
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)),
                         timezone(timedelta(minutes=-30))])
times = (
    st.none()
    | st.datetimes(timezones=zones)                              # past, present and far future, aware
    | st.datetimes()                                             # naive
    | st.sampled_from([datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
                       datetime.max.replace(tzinfo=timezone(timedelta(hours=-12))),
                       "2030-01-01T00:00:00Z", 1_700_000_000, datetime.now(UTC).date()])
)
delays = (
    st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(2**64), max_value=2**64)
    | st.timedeltas() | st.sampled_from(["5", True, [1]])
)
whole = st.none() | st.integers(min_value=-(2**40), max_value=2**40) | st.sampled_from([1.5, 2.0, "3", True, -0.0])
unique_keys = st.none() | odd_text | st.sampled_from(["", "k" * 5000, 7, b"key"])


# -- checks ----------------------------------------------------------------------


def count(rt: Any) -> int:
    return scalar(rt.settings.database_url, "SELECT count(*) FROM jobs")


def normalised(payload: Any) -> Any:
    """What a stored JSON payload reads back as."""
    data = attrs.asdict(payload) if attrs.has(type(payload)) else payload
    return json.loads(json.dumps(data, allow_nan=False))


def check_stored(rt: Any, job_id: uuid.UUID, payload: Any, options: dict[str, Any]) -> None:
    job = rt.job(job_id)  # reads back, whatever was asked
    assert job.payload == normalised(payload if payload is not None else {})
    if options.get("priority") is not None:
        assert job.priority == options["priority"]
    if options.get("max_attempts") is not None:
        assert job.max_attempts == options["max_attempts"]
    if options.get("run_at") is not None:
        assert job.run_at == options["run_at"]


@pytest.fixture
def rt(pmq_runtime):
    return pmq_runtime(Plugin(), worker=False, migrator=False)


@EXAMPLES
@given(queue=queues, payload=payloads, priority=whole, run_at=times, delay=delays, max_attempts=whole,
       unique_key=unique_keys)
def test_enqueue_stores_exactly_or_raises_one_clear_error(rt, queue, payload, priority, run_at, delay,
                                                          max_attempts, unique_key):
    options = {"priority": priority, "run_at": run_at, "delay": delay, "max_attempts": max_attempts,
               "unique_key": unique_key}
    before = count(rt)
    try:
        job_id = rt.enqueue(queue, payload, **options)
    except PmqError as exc:
        assert str(exc)  # says what is wrong
        assert count(rt) == before, "a refused enqueue wrote something"
        return
    assert count(rt) - before in ((0, 1) if unique_key is not None else (1,))
    check_stored(rt, job_id, payload, options)


@EXAMPLES
@given(good=st.lists(st.builds(lambda n: {"n": n}, st.integers(-5, 5)), min_size=1, max_size=80),
       odd=payloads, position=st.integers(min_value=0), queue=st.sampled_from(["free", "typed"]))
def test_enqueue_many_writes_all_or_nothing(rt, good, odd, position, queue):
    batch = list(good)
    batch.insert(position % (len(batch) + 1), odd)
    before = count(rt)
    try:
        ids = rt.client.enqueue_many(queue, batch)
    except PmqError as exc:
        assert str(exc)
        assert count(rt) == before, "a refused batch wrote part of itself"
        return
    assert count(rt) == before + len(batch) == before + len(set(ids))


def test_known_bad_values_name_the_problem(rt):
    cases = [
        ({"queue": "free", "payload": {"x": math.nan}}, "NaN"),
        ({"queue": "free", "payload": {"x": "a\x00"}}, "NUL"),
        ({"queue": "free", "payload": {"x": "\ud800"}}, "surrogate"),
        ({"queue": "free", "payload": {"blob": "x" * 70_000}}, "over the limit"),
        ({"queue": "typed", "payload": {"n": "one"}}, "payload.n"),
        ({"queue": "free'; --", "payload": {}}, "invalid queue name"),
        ({"queue": "nope", "payload": {}}, "unknown queue 'nope'"),
        ({"queue": "free", "payload": {}, "priority": INT32 + 1}, "priority"),
        ({"queue": "free", "payload": {}, "max_attempts": 0}, "max_attempts"),
        ({"queue": "free", "payload": {}, "run_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"queue": "free", "payload": {}, "delay": -1}, "negative"),
        ({"queue": "free", "payload": {}, "delay": 1e300}, "too far"),
        ({"queue": "free", "payload": {}, "unique_key": "a\x00"}, "NUL"),
    ]
    for kwargs, phrase in cases:
        with pytest.raises(PmqError) as info:
            rt.enqueue(kwargs.pop("queue"), kwargs.pop("payload"), **kwargs)
        assert phrase in str(info.value), (phrase, str(info.value))
    assert count(rt) == 0


@pytest.mark.parametrize("name", ["free\n", "free\r\n", "\nfree", "a" * 100 + "\n"])
def test_a_queue_name_is_matched_whole_so_a_trailing_newline_is_refused(rt, name):
    with pytest.raises(PmqError, match="invalid queue name"):
        rt.enqueue(name, {})
    with pytest.raises(ValueError, match="invalid queue name"):
        JobType(name=name, handler=lambda job: None)
    assert count(rt) == 0


def test_errors_quote_a_huge_value_cut_short(rt):
    huge = "q" * 10_000
    cases = [lambda: rt.enqueue(huge, {}), lambda: rt.enqueue("free", {}, unique_key="k\x00" + huge),
             lambda: rt.enqueue("free", {}, priority=10**5000), lambda: rt.job(huge)]
    for case in cases:
        with pytest.raises(PmqError) as info:
            case()
        message = str(info.value)
        assert len(message) < 300, message
        assert "chars)" in message or "too long to show" in message, message
