"""The retry policy (jobtypes.RetryPolicy), without a server: the backoff
maths (base × 2^attempt, capped, then spread by ± jitter) and which errors
are retried."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pmq_core import Fail, Retry, RetryPolicy
from pmq_core.errors import JobCancelled

policies = st.builds(RetryPolicy, base_delay=st.just(0.0) | st.floats(0.001, 100), max_delay=st.floats(0, 10_000),
                     jitter=st.floats(0, 1))
attempts = st.integers(1, 10_000)


def band(policy: RetryPolicy, attempt: int) -> tuple[float, float]:
    """The delays the documented rule allows after ``attempt``."""
    raw = min(policy.base_delay * 2.0 ** min(attempt, 1000), policy.max_delay)  # 2^1000: past any cap
    slack = 1e-9 * raw  # the float rounding of raw * (1 + spread)
    return raw * (1 - policy.jitter) - slack, raw * (1 + policy.jitter) + slack


@given(policy=policies, attempt=attempts, seed=st.integers(0, 2**32))
def test_a_delay_is_the_capped_exponential_spread_by_at_most_the_jitter(policy, attempt, seed):
    low, high = band(policy, attempt)
    assert low <= policy.delay(attempt, random.Random(seed)) <= high


@given(attempt=attempts, seed=st.integers(0, 2**32))
def test_the_default_policy_doubles_from_one_second_up_to_five_minutes_give_or_take_a_quarter(attempt, seed):
    delay = RetryPolicy().delay(attempt, random.Random(seed))
    raw = min(2**attempt, 300)
    assert 0.75 * raw <= delay <= 1.25 * raw


@given(policy=policies.map(lambda p: RetryPolicy(base_delay=p.base_delay, max_delay=p.max_delay, jitter=0.0)),
       attempt=attempts)
def test_without_jitter_the_delay_never_shrinks_from_one_attempt_to_the_next(policy, attempt):
    assert policy.delay(attempt) <= policy.delay(attempt + 1) <= policy.max_delay


@given(policy=policies, attempt=attempts, seed=st.integers(0, 2**32))
def test_the_same_random_source_gives_the_same_delay(policy, attempt, seed):
    assert policy.delay(attempt, random.Random(seed)) == policy.delay(attempt, random.Random(seed))


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 40, 100])
def test_the_jitter_really_spreads_over_both_halves_of_its_band(attempt):
    policy = RetryPolicy(base_delay=1.0, max_delay=300.0, jitter=0.25)
    rng = random.Random(attempt)
    raw = min(2.0**attempt, 300.0)
    delays = [policy.delay(attempt, rng) for _ in range(2000)]
    assert min(delays) < raw * 0.9 and max(delays) > raw * 1.1


def test_delay_without_jitter_is_exact():
    policy = RetryPolicy(base_delay=0.5, max_delay=20.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 6, 7)] == [1.0, 2.0, 4.0, 20.0, 20.0]


# -- which errors retry ----------------------------------------------------------------

ERRORS = [ConnectionResetError, ConnectionError, TimeoutError, ValueError, KeyError, OSError, RuntimeError]


def test_which_errors_retry():
    policy = RetryPolicy(retry_on=(ConnectionError, TimeoutError))
    assert policy.retries(ConnectionResetError())
    assert policy.retries(TimeoutError())
    assert not policy.retries(ValueError())
    assert policy.retries(Retry("again"))  # asked for explicitly: always retried
    assert not policy.retries(Fail("no"))
    assert not policy.retries(JobCancelled())


@given(retry_on=st.lists(st.sampled_from(ERRORS), min_size=1, max_size=3), error=st.sampled_from(ERRORS))
def test_an_error_retries_exactly_when_it_is_one_of_the_classes_named(retry_on, error):
    policy = RetryPolicy(retry_on=tuple(retry_on))
    assert policy.retries(error()) is any(issubclass(error, named) for named in retry_on)
    assert policy.retries(Retry("again")) and not policy.retries(Fail("no"))  # whatever retry_on says


def test_bad_policies_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)
    with pytest.raises(TypeError, match="retry_on"):
        RetryPolicy(retry_on=("ConnectionError",))  # type: ignore[arg-type]
