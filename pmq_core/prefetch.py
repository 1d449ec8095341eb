"""How many jobs a worker claims ahead of its free slots.

A popped message starts its job only after the worker's next database round
has claimed it, so a worker whose slots free faster than a round returns
sits idle between rounds unless it has claimed ahead. How far ahead pays
depends on the jobs: quick jobs want a round's worth of them ready, long
ones want none, since a job claimed ahead waits for this worker's slot even
when another worker is idle.

With ``prefetch`` unset the worker sizes this itself, from what it measures:
enough jobs to keep every slot busy for four database rounds. A popped
message waits for the round in flight, then for the round that claims it;
the other two cover rounds that run long (under load they vary threefold).
Quick jobs so get dozens claimed ahead, jobs of a second or more none.
"""

from __future__ import annotations

import attrs

#: Weight of the newest sample in the running averages.
SMOOTHING = 0.2
#: The most jobs claimed ahead, per unit of concurrency: bounds what a
#: stopping or dying worker holds, and the wait of a later, more urgent job.
MOST_AHEAD_PER_SLOT = 4


@attrs.define
class Prefetch:
    """Claim-ahead sizing for one worker: ``fixed`` when the operator set
    ``prefetch``, else derived from the average round and job durations."""

    concurrency: int
    fixed: int | None = None
    round_seconds: float | None = None
    job_seconds: float | None = None

    def round_took(self, seconds: float) -> None:
        self.round_seconds = _smoothed(self.round_seconds, seconds)

    def job_took(self, seconds: float) -> None:
        self.job_seconds = _smoothed(self.job_seconds, seconds)

    def ahead(self) -> int:
        """Jobs to hold claimed beyond the running ones. Until both
        durations are known: as many as ``concurrency``."""
        if self.fixed is not None:
            return self.fixed
        if self.round_seconds is None or self.job_seconds is None:
            return self.concurrency
        # Jobs finished per second, times four rounds.
        wanted = self.concurrency / max(self.job_seconds, 1e-6) * 4 * self.round_seconds
        return min(round(wanted), MOST_AHEAD_PER_SLOT * self.concurrency)


def _smoothed(average: float | None, sample: float) -> float:
    return sample if average is None else average + SMOOTHING * (sample - average)
