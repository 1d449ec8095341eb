"""Flow control's arithmetic, without a server: parsing limits, which limit
is in force, and the budgets of one migrator pass."""

from __future__ import annotations

import uuid

import pytest

from pmq_core.flow import (
    DECLARED,
    EACH,
    OPERATOR,
    PARTITION,
    QUEUE,
    REDIS_SHARE,
    Limit,
    LimitRow,
    Limits,
    Rate,
    by_queue,
    check_partition,
    declared_rows,
    plan,
    ticket_scopes,
    tickets_for,
)


@pytest.mark.parametrize(("text", "count", "period"), [
    ("100/s", 100, 1), ("20/minute", 20, 60), ("20/minutes", 20, 60), ("500/d", 500, 86400),
    ("10/5m", 10, 300), (" 7 / 2h ", 7, 7200), ("3/HOUR", 3, 3600),
])
def test_rates_parse_from_count_and_period(text, count, period):
    assert Rate.parse(text) == Rate(count, period)


@pytest.mark.parametrize("text", ["", "100", "x/s", "10/ms", "1/ss", "0/s", "10/0s", "5/400d", "-1/s", "1/s/s"])
def test_a_malformed_rate_is_one_clear_error(text):
    with pytest.raises(ValueError, match="rate|count|period"):
        Rate.parse(text)


def test_a_rate_prints_as_it_would_be_typed():
    assert [str(Rate.parse(t)) for t in ("100/s", "20/minute", "10/5m", "40/day", "7/90s")] == [
        "100/s", "20/m", "10/5m", "40/d", "7/90s"]


@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 201, 7, "\ud800"])
def test_a_partition_key_must_be_short_text(bad):
    with pytest.raises(ValueError, match="partition"):
        check_partition(bad)


def test_an_operator_limit_wins_over_the_declared_one_of_its_scope():
    rows = [
        *declared_rows("q", Limits(queue=Limit(concurrency=5), each_partition=Limit(rate="3/s"))),
        LimitRow(queue="q", scope=QUEUE, partition="", origin=OPERATOR, limit=Limit(concurrency=9)),
        LimitRow(queue="q", scope=PARTITION, partition="vip", origin=OPERATOR, limit=Limit()),
    ]
    limits = by_queue(rows)["q"]
    assert limits.queue == Limit(concurrency=9)
    assert limits.for_partition("anyone") == Limit(rate=Rate(3, 1))
    assert limits.for_partition(None) == Limit(rate=Rate(3, 1))  # the default partition is one like any other
    assert limits.for_partition("vip") == Limit()  # lifted for this one


def test_declaring_no_limit_at_all_still_makes_the_queue_fair():
    assert declared_rows("q", None) == []
    (row,) = declared_rows("q", Limits())
    assert (row.scope, row.origin, bool(row.limit)) == (QUEUE, DECLARED, False)
    assert "q" in by_queue([row])


def test_a_cap_leaves_room_for_what_is_not_in_flight_and_holds_the_rest():
    limits = by_queue(declared_rows("q", Limits(queue=Limit(concurrency=5))))
    passed = plan(limits, {"q": REDIS_SHARE}, {}, {("q", None): 3}, {})
    assert passed.budgets == {"q": 2} and passed.blocked == {}
    full = plan(limits, {"q": REDIS_SHARE}, {}, {("q", None): 5}, {})
    assert full.picks == [] and full.blocked == {"q": None}


def test_partitions_share_the_room_and_a_partition_at_its_limit_is_held():
    limits = by_queue(declared_rows("q", Limits(each_partition=Limit(concurrency=2))))
    passed = plan(limits, {"q": 10}, {"q": ["a", "b", "c"]}, {("q", "a"): 2, ("q", "b"): 1}, {})
    assert passed.picks == [("q", None, 2), ("q", "b", 1), ("q", "c", 2)]  # share of 10 over 4: 3 each at most
    assert passed.blocked == {"q": ["a"]}


def test_rates_count_their_tickets_and_each_handed_over_job_takes_one_per_rate():
    limits = by_queue(declared_rows("q", Limits(queue=Limit(rate="10/s"), each_partition=Limit(rate="2/m"))))
    scopes = ticket_scopes(limits, {"q": ["a"]})
    assert scopes == [("q", "queue"), ("q", "default"), ("q", "p a")]
    passed = plan(limits, {"q": REDIS_SHARE}, {"q": ["a"]}, {}, {("q", "queue"): 7, ("q", "p a"): 2})
    assert passed.budgets == {"q": 3} and passed.picks == [("q", None, 2)] and passed.blocked == {"q": ["a"]}
    job = uuid.uuid4()
    assert tickets_for(limits, [{"queue_name": "q", "partition_key": None, "id": job}]) == [
        ("q", "queue", job, 1), ("q", "default", job, 60)]


def test_limits_reject_values_no_migrator_could_apply():
    for bad in ({"concurrency": 0}, {"concurrency": True}, {"concurrency": 2**31}, {"rate": "0/s"}):
        with pytest.raises(ValueError):
            Limit(**bad)
    with pytest.raises(TypeError):
        Limits(queue={"concurrency": 1})
    assert EACH in Limits().describe()
