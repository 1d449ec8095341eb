"""How far ahead a worker claims (prefetch.py), without a server: what the
operator set, else sized from the job and round durations the worker
measured."""

from __future__ import annotations

from pmq_core.prefetch import MOST_AHEAD_PER_SLOT, Prefetch


def test_a_set_prefetch_is_kept_whatever_the_durations():
    prefetch = Prefetch(concurrency=10, fixed=0)
    prefetch.round_took(0.01)
    prefetch.job_took(0.0001)
    assert prefetch.ahead() == 0


def test_until_both_durations_are_known_it_claims_as_many_as_it_runs():
    prefetch = Prefetch(concurrency=7)
    assert prefetch.ahead() == 7
    prefetch.round_took(0.003)
    assert prefetch.ahead() == 7


def test_quick_jobs_fill_four_rounds_up_to_the_bound():
    prefetch = Prefetch(concurrency=10)
    prefetch.round_took(0.002)
    prefetch.job_took(0.010)  # 1,000 jobs/s over four 2 ms rounds: 8
    assert prefetch.ahead() == 8
    prefetch = Prefetch(concurrency=10)
    prefetch.round_took(0.004)
    prefetch.job_took(0.0005)  # 20,000 jobs/s: 320, bounded
    assert prefetch.ahead() == MOST_AHEAD_PER_SLOT * 10


def test_long_jobs_claim_nothing_ahead():
    prefetch = Prefetch(concurrency=10)
    prefetch.round_took(0.005)
    prefetch.job_took(2.0)
    assert prefetch.ahead() == 0


def test_durations_are_running_averages_that_follow_a_change():
    prefetch = Prefetch(concurrency=10)
    prefetch.round_took(0.002)
    prefetch.job_took(2.0)
    assert prefetch.ahead() == 0
    for _ in range(40):  # the jobs became quick
        prefetch.job_took(0.010)
    assert prefetch.ahead() == 8
