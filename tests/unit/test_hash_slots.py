"""The hash-slot rule that lets pmq run on a Redis Cluster: no script call
and no multi-key command takes keys of two queues, so each touches one
slot. Checked on the calls pmq builds, without a server: a regression shows
here rather than as a CROSSSLOT error on a cluster."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from pmq_core import dispatch
from pmq_core.jobtypes import QUEUE_NAME
from pmq_core.keys import Keys
from pmq_core.popping import pop_groups

KEYS = Keys("app:")
queue_lists = st.lists(st.from_regex(QUEUE_NAME, fullmatch=True), min_size=1, max_size=6, unique=True)


def slots(keys: list[str]) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


def jobs(queues: list[str]) -> list[tuple[str, uuid.UUID]]:
    """Two jobs per queue, interleaved, as a batch mixes them."""
    return [(queue, uuid.uuid4()) for _ in range(2) for queue in queues]


@given(queues=queue_lists, priorities=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=12, max_size=12))
def test_every_script_call_takes_the_keys_of_one_slot(queues, priorities):
    now = datetime.now(UTC)
    rows = [{"id": job_id, "queue_name": queue, "priority": priority, "attempt_count": 1, "created_at": now}
            for (queue, job_id), priority in zip(jobs(queues), priorities, strict=False)]
    marks = [dispatch.Mark(job_id, queue, "running") for queue, job_id in jobs(queues)]
    calls = [*dispatch.push_calls(KEYS, rows), *dispatch.mark_calls(KEYS, marks),
             *dispatch.dead_calls(KEYS, jobs(queues))]
    assert calls
    for script_keys, _args in calls:
        assert len(slots(script_keys)) == 1, script_keys


@given(queues=queue_lists)
def test_a_queues_keys_share_its_slot(queues):
    for queue in queues:
        assert len(slots([*KEYS.bands(queue), KEYS.dead(queue), KEYS.job(queue, uuid.uuid4())])) == 1


@given(queues=queue_lists)
def test_on_a_cluster_each_pop_takes_one_slot_and_every_band_is_popped_once(queues):
    groups = pop_groups(KEYS, queues, cluster=True)
    assert all(len(slots(group)) == 1 for group in groups)
    assert sorted(key for group in groups for key in group) == sorted(k for q in queues for k in KEYS.bands(q))


def test_within_a_pop_the_bands_go_most_urgent_first():
    (group,) = pop_groups(KEYS, ["mail", "hooks"], cluster=False)
    assert group == [*(KEYS.band(q, "high") for q in ("mail", "hooks")), KEYS.band("mail", "normal"),
                     KEYS.band("hooks", "normal"), KEYS.band("mail", "low"), KEYS.band("hooks", "low")]
