"""The worker's slot book (slots.py), without a server: what may be popped,
what starts, what frees a slot, and what pause, cancel and shutdown take back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pmq_core.jobtypes import JobType
from pmq_core.models import JobContext
from pmq_core.prefetch import Prefetch
from pmq_core.slots import Claim, SlotBook

JOB_TYPES = {name: JobType(name=name, handler=lambda job: None) for name in ("mail", "hooks")}


def claim(queue: str = "mail", priority: int = 100) -> Claim:
    now = datetime.now(UTC)
    ctx = JobContext(id=uuid.uuid4(), queue=queue, payload=None, attempt=1, max_attempts=5, priority=priority,
                     created_at=now, started_at=now, raw_payload={})
    return Claim(ctx, JOB_TYPES[queue])


def book(concurrency: int = 2, ahead: int = 1) -> SlotBook:
    return SlotBook(concurrency, Prefetch(concurrency, fixed=ahead))


def hold(slots: SlotBook, *claims: Claim) -> None:
    """Pop, claim and hold ``claims``, as one database round would."""
    slots.popped(len(claims))
    slots.answered(len(claims))
    for one in claims:
        assert slots.claimed(one, asked=0.0)


def test_a_high_band_job_claimed_behind_low_band_ones_starts_first():
    slots = book(concurrency=1, ahead=4)
    low, normal, high, later_high = claim(priority=200), claim(priority=100), claim(priority=10), claim(priority=50)
    hold(slots, low, normal, high, later_high)
    started = []
    while (one := slots.start_next()) is not None:
        started.append(one)
        slots.finished(one)
    assert started == [high, later_high, normal, low]  # by band, in claim order within one


def test_popped_messages_hold_slots_until_their_claim_answers():
    slots = book(concurrency=2, ahead=1)
    assert slots.free() == 3
    slots.popped(3)
    assert (slots.free(), slots.unclaimed) == (0, 3)
    slots.answered(3)  # a claim that took none of them (duplicates, stale): all three slots back
    assert (slots.free(), slots.unclaimed, slots.held) == (3, 0, 0)


def test_claimed_jobs_start_in_claim_order_while_slots_are_free():
    slots = book(concurrency=2, ahead=1)
    first, second, third = claim(), claim(), claim()
    hold(slots, first, second, third)
    assert (slots.free(), slots.held, slots.counts()) == (0, 3, (0, 3))
    assert slots.start_next() is first
    assert slots.start_next() is second
    assert slots.start_next() is None  # both slots taken: the third waits, claimed ahead
    assert slots.counts() == (2, 1)
    assert slots.started() == [first, second]


def test_a_slot_is_free_only_once_the_jobs_code_has_ended():
    slots = book(concurrency=1, ahead=1)
    running, waiting = claim(), claim()
    hold(slots, running, waiting)
    assert slots.start_next() is running
    assert slots.start_next() is None
    slots.finished(running)
    assert (slots.processed, slots.held, slots.free()) == (1, 1, 1)
    assert slots.start_next() is waiting
    slots.finished(waiting)
    assert (slots.processed, slots.held, slots.counts(), slots.free()) == (2, 0, (0, 0), 2)


def test_a_cancelled_job_is_withdrawn_only_while_it_waits():
    slots = book(concurrency=1, ahead=1)
    running, waiting = claim(), claim()
    hold(slots, running, waiting)
    slots.start_next()
    assert not slots.withdraw(running)  # started: the worker cancels its task instead
    assert slots.get(running.ctx.id) is running
    assert slots.withdraw(waiting)
    assert slots.get(waiting.ctx.id) is None and slots.counts() == (1, 0)
    slots.finished(running)
    assert slots.start_next() is None  # the withdrawn job never starts


def test_a_pause_gives_back_its_queues_waiting_jobs_and_refuses_claims_in_flight():
    slots = book(concurrency=1, ahead=3)
    running, mail, hooks = claim("mail"), claim("mail"), claim("hooks")
    hold(slots, running, mail, hooks)
    slots.start_next()
    assert slots.give_back("mail", now=10.0) == [mail]  # the running one finishes its attempt
    assert slots.held == 2 and slots.get(mail.ctx.id) is None
    late = claim("mail")
    assert not slots.claimed(late, asked=9.0)  # its round was sent before the pause was heard
    assert slots.get(late.ctx.id) is None
    assert slots.claimed(claim("mail"), asked=11.0)  # sent after: the queue may have resumed since
    assert slots.claimed(claim("hooks"), asked=9.0)  # another queue


def test_a_stopping_worker_starts_nothing_and_gives_back_all_it_holds():
    slots = book(concurrency=1, ahead=2)
    running, waiting = claim(), claim()
    hold(slots, running, waiting)
    slots.start_next()
    slots.stop()
    assert slots.stopping
    slots.finished(running)
    assert slots.start_next() is None
    assert slots.started() == []
    assert slots.leftovers() == [waiting]
    assert slots.counts() == (0, 0)  # no longer waiting: given back
    slots.let_go([waiting])
    assert slots.held == 0


def test_a_handler_still_running_when_let_go_stays_busy_until_it_ends():
    slots = book(concurrency=1, ahead=0)
    stuck = claim()
    hold(slots, stuck)
    slots.start_next()
    slots.stop()
    assert slots.leftovers() == [stuck]
    slots.let_go([stuck])
    assert (slots.held, slots.counts()) == (0, (1, 0))  # its thread still runs: the heartbeat says busy
    slots.finished(stuck)
    assert slots.counts() == (0, 0)


operations = st.lists(st.sampled_from(["pop", "answer", "claim", "start", "finish", "cancel", "pause"]),
                      max_size=60)


@settings(max_examples=300, deadline=None)
@given(concurrency=st.integers(1, 4), ahead=st.integers(0, 4), ops=operations)
def test_whatever_happens_no_more_handlers_run_than_slots_and_nothing_is_held_twice(concurrency, ahead, ops):
    slots = book(concurrency, ahead)
    popped, asked, paused = 0, 0.0, -1.0  # messages popped and not answered; when popped; when paused
    waiting: list[Claim] = []
    running: list[Claim] = []
    for clock, op in enumerate(ops):
        if op == "pop" and slots.free() > 0:
            count = slots.free()
            slots.popped(count)
            popped, asked = popped + count, float(clock)
        elif op == "answer" and popped:
            slots.answered(popped)
            for _ in range(popped // 2):  # some messages claim nothing
                one = claim()
                assert slots.claimed(one, asked) is (asked > paused)
                if asked > paused:
                    waiting.append(one)
            popped = 0
        elif op == "start" and (one := slots.start_next()) is not None:
            assert one is waiting.pop(0)  # claim order
            running.append(one)
        elif op == "finish" and running:
            slots.finished(running.pop(0))
        elif op == "cancel" and waiting:
            assert slots.withdraw(waiting.pop())
        elif op == "pause":
            paused = float(clock)
            assert slots.give_back("mail", paused) == waiting
            waiting.clear()
        assert slots.counts() == (len(running), len(waiting))
        assert slots.held == len(running) + len(waiting) and slots.unclaimed == popped
        assert len(running) <= concurrency
        assert slots.held + popped <= concurrency + ahead  # popping never takes more than the free slots
        assert slots.started() == running
