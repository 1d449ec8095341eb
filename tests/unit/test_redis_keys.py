"""The Redis key layout and the message format (keys.py), without a server."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pmq_core.jobtypes import HIGH_MAX, NORMAL_MAX, QUEUE_NAME, band_of
from pmq_core.keys import BANDS, Keys, message, parse_message
from pmq_core.limits import INT32 as MAX_ATTEMPT

PREFIX = "app7:"
queue_names = st.from_regex(QUEUE_NAME, fullmatch=True)


def every_key(keys: Keys, queue: str, job_id: uuid.UUID) -> list[str]:
    return [*keys.bands(queue), keys.dead(queue), keys.job(queue, job_id), keys.cancel_channel]


@given(queue=queue_names, job_id=st.uuids())
def test_every_key_and_channel_is_under_the_prefix(queue, job_id):
    assert all(key.startswith(PREFIX) for key in every_key(Keys(PREFIX), queue, job_id))


@given(queue=queue_names, job_id=st.uuids())
def test_a_queues_keys_are_distinct_and_carry_its_name_as_hash_tag(queue, job_id):
    keys = Keys(PREFIX)
    queue_keys = [*keys.bands(queue), keys.dead(queue), keys.job(queue, job_id)]
    assert len(set(every_key(keys, queue, job_id))) == 6
    assert all(key.startswith(f"{PREFIX}{{{queue}}}") for key in queue_keys)


@given(first=queue_names, second=queue_names, job_id=st.uuids())
def test_two_queues_never_share_a_key(first, second, job_id):
    """Braces cannot occur in a queue name, so the tag ends where the name does."""
    keys = Keys(PREFIX)
    if first != second:
        assert not set(every_key(keys, first, job_id)[:5]) & set(every_key(keys, second, job_id)[:5])


def test_the_bands_are_most_urgent_first_and_the_normal_one_has_no_suffix():
    assert BANDS == ("high", "normal", "low")
    assert Keys("p:").bands("mail") == ["p:{mail}:high", "p:{mail}", "p:{mail}:low"]
    assert (Keys("p:").dead("mail"), Keys("p:").job("mail", "42"), Keys("p:").cancel_channel) == (
        "p:{mail}:dead", "p:{mail}:job:42", "p:cancel")


def test_priorities_fall_into_the_bands_in_order_at_the_documented_limits():
    priorities = [-(2**31), 0, HIGH_MAX, HIGH_MAX + 1, NORMAL_MAX, NORMAL_MAX + 1, 2**31 - 1]
    bands = [band_of(p) for p in priorities]
    assert bands == ["high", "high", "high", "normal", "normal", "low", "low"]
    assert set(bands) == set(BANDS)


@given(job_id=st.uuids(), attempt=st.integers(0, MAX_ATTEMPT))
def test_a_message_parses_back_to_its_job_and_attempt(job_id, attempt):
    text = message(job_id, attempt)
    assert parse_message(text) == parse_message(text.encode()) == (job_id, attempt)


JOB = "0b5e7a8c-32d1-4f0e-9d8e-6c1f2a3b4c5d"


@pytest.mark.parametrize("raw", [
    f"{JOB}:{MAX_ATTEMPT + 1}",  # beyond PostgreSQL's integer: would fail the whole claim
    f"{JOB}:99999999999",
    f"{JOB}:{'0' * 11}1",
    f"{JOB}:-1",
    f"{JOB}:+1",
    f"{JOB}: 1",
    f"{JOB}:1 ",
    f"{JOB}:1.0",
    f"{JOB}:",
    f"{JOB}:\u0661",  # a digit, but not an ASCII one
    JOB,
    "not-a-uuid:1",
    ":1",
    "",
    b"\xff\xfe:1",
    f"{JOB}:1".encode("utf-16"),
])
def test_a_malformed_message_is_refused(raw):
    assert parse_message(raw) is None


@given(st.one_of(st.text(), st.binary()))
def test_no_input_makes_parsing_raise(raw):
    parsed = parse_message(raw)
    assert parsed is None or 0 <= parsed[1] <= MAX_ATTEMPT
