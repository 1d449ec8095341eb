"""Backoff between reconnection attempts, from tenacity's wait maths."""

from __future__ import annotations

import tenacity


class Backoff:
    """Exponential backoff with jitter (0.1 s doubling up to 5 s), reset
    after a success. Long-running loops use it to wait out a server restart
    without hammering the server or giving up."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self._wait = tenacity.wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)
        self._attempt = 0

    def next(self) -> float:
        self._attempt += 1
        state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = self._attempt
        return float(self._wait(state))

    def reset(self) -> None:
        self._attempt = 0
