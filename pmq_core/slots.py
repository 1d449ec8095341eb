"""A worker's slot book: which jobs it holds, which of them run, and how many
more messages it may pop.

A worker runs at most ``concurrency`` handlers at once, and holds a few more
jobs claimed ahead (see :mod:`pmq_core.prefetch`) so that a slot that frees
finds its next job already claimed. A job passes through the book in three
steps: its message is popped (it holds a slot before the claim answers,
since the claim may well succeed), it is claimed (it waits by band, high
before normal before low, in claim order within a band, as the bands'
lists are popped), and it starts once a slot is free. Its slot is
free again when its code has ended: for a sync handler, that is when its
thread returns, however long after its task (see :meth:`SlotBook.finished`).

The book only counts. Starting tasks, waking the fetch loop and telling
PostgreSQL are the worker's; the book tells it what to do, so that the
arithmetic that decides what runs is in one place and tested without a
server (``tests/unit/test_slots.py``). Everything runs on the worker's event
loop, except :meth:`SlotBook.counts`, which the heartbeat thread reads.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from typing import Any

import attrs

from pmq_core.jobtypes import JobType, band_of
from pmq_core.keys import BANDS
from pmq_core.models import JobContext
from pmq_core.prefetch import Prefetch


@attrs.define(eq=False)
class Claim:
    """A claimed job: waiting for a slot (no task yet) or running.

    A sync handler runs in ``thread``, which nothing can stop: the job holds
    its slot until both its task and its thread have ended."""

    ctx: JobContext
    job_type: JobType
    suspect: bool = False  # rescued from a dead worker: runs alone, isolated
    claimed: float = attrs.field(factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    thread: asyncio.Future[Any] | None = None
    stop_reason: str | None = None

    def thread_runs(self) -> bool:
        return self.thread is not None and not self.thread.done()


class SlotBook:
    """The claim/run/finish bookkeeping of one worker."""

    def __init__(self, concurrency: int, prefetch: Prefetch) -> None:
        self.concurrency = concurrency
        self.prefetch = prefetch
        #: Jobs whose handler ran to its end (or was stopped), for the log.
        self.processed = 0
        self._held: dict[uuid.UUID, Claim] = {}  # every claimed job, waiting or running
        # Claimed ahead, by band: a high-band job claimed behind a backlog of
        # low-band ones starts at the next free slot, not after them.
        self._waiting: dict[str, collections.deque[Claim]] = {band: collections.deque() for band in BANDS}
        self._busy = 0  # handlers running, threads included until they end
        self._unclaimed = 0  # popped messages whose claim has not answered yet
        self._paused: dict[str, float] = {}  # queue -> when the worker heard it was paused (monotonic)
        self._stopping = False

    def _line(self, claim: Claim) -> collections.deque[Claim]:
        """The line a claimed job waits in: its band's."""
        return self._waiting[band_of(claim.ctx.priority)]

    # -- what the worker asks ------------------------------------------------------

    def free(self) -> int:
        """How many messages the worker may pop now: its slots and the jobs
        it may claim ahead, less what it holds and what it has popped."""
        return self.concurrency + self.prefetch.ahead() - len(self._held) - self._unclaimed

    @property
    def unclaimed(self) -> int:
        """Popped messages whose claim has not answered yet."""
        return self._unclaimed

    @property
    def held(self) -> int:
        """Claimed jobs, waiting or running."""
        return len(self._held)

    @property
    def stopping(self) -> bool:
        """Whether the worker stops: no job starts any more."""
        return self._stopping

    def get(self, job_id: uuid.UUID) -> Claim | None:
        return self._held.get(job_id)

    def counts(self) -> tuple[int, int]:
        """Handlers running (threads included until they end) and jobs
        claimed ahead of a free slot, for the heartbeat. Read from the
        heartbeat's thread: two ints, a snapshot is enough."""
        return self._busy, sum(map(len, self._waiting.values()))

    # -- a job's way through -------------------------------------------------------

    def popped(self, count: int) -> None:
        """``count`` messages were popped; each holds a slot until its claim answers."""
        self._unclaimed += count

    def answered(self, count: int) -> None:
        """The claim of ``count`` popped messages answered (whether it
        claimed their jobs or not): they hold slots no longer as messages."""
        self._unclaimed -= count

    def claimed(self, claim: Claim, asked: float) -> bool:
        """Hold a job claimed by a round sent at ``asked`` (monotonic), in
        line for a slot. False, holding nothing, when its queue was paused
        since: the job must be given back."""
        if self._paused.get(claim.ctx.queue, -1.0) >= asked:
            return False
        self._held[claim.ctx.id] = claim
        self._line(claim).append(claim)
        return True

    def start_next(self) -> Claim | None:
        """The next job to start, its slot taken; None when no slot is free,
        no job waits, or the worker stops."""
        if self._busy >= self.concurrency or self._stopping:
            return None
        line = next((line for line in self._waiting.values() if line), None)
        if line is None:
            return None
        self._busy += 1
        return line.popleft()

    def finished(self, claim: Claim) -> None:
        """The job's code has ended (its handler's thread too): its slot is free."""
        self._held.pop(claim.ctx.id, None)
        self._busy -= 1
        self.processed += 1

    # -- what operators and the shutdown take back ------------------------------------

    def withdraw(self, claim: Claim) -> bool:
        """Drop a job that waits for a slot (it was cancelled); False, and
        nothing changes, when it has started."""
        if claim not in self._line(claim):
            return False
        self._line(claim).remove(claim)
        del self._held[claim.ctx.id]
        return True

    def give_back(self, queue: str, now: float) -> list[Claim]:
        """The queue was paused at ``now`` (monotonic): drop and return its
        jobs waiting for a slot. Jobs of a claim already in flight are
        refused by :meth:`claimed`."""
        self._paused[queue] = now
        given = [claim for line in self._waiting.values() for claim in line if claim.ctx.queue == queue]
        for claim in given:
            self._line(claim).remove(claim)
            del self._held[claim.ctx.id]
        return given

    def stop(self) -> None:
        """Start no job any more: the worker stops."""
        self._stopping = True

    def started(self) -> list[Claim]:
        """The jobs whose handler has started and whose code has not ended."""
        return [claim for claim in self._held.values() if claim not in self._line(claim)]

    def leftovers(self) -> list[Claim]:
        """Every job held, waiting or running, at the end of the shutdown's
        grace; those waiting stop waiting (they are given back)."""
        for line in self._waiting.values():
            line.clear()
        return list(self._held.values())

    def let_go(self, claims: list[Claim]) -> None:
        """Hold these jobs no longer: given back at shutdown. A handler still
        running keeps counting as busy until :meth:`finished`."""
        for claim in claims:
            self._held.pop(claim.ctx.id, None)
