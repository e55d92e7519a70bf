"""When a failed request is tried again, and after how long: shared by both clients."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ConnectionFailed, LogserverError, TooManyRequests, Unavailable


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for connection failures, 503 and 429 only.

    `attempts` counts the first try too (1: never retry). A 429's `Retry-After` is honoured
    (waited at least) unless it exceeds `max_retry_after`, when the error is raised at once.
    Immutable, so one policy may serve many clients and threads.
    """

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def delay(self, attempts_made: int, error: LogserverError) -> float | None:
        """Seconds to wait before the next try after `error`, or None to raise it."""
        if attempts_made >= self.attempts or not isinstance(
            error, ConnectionFailed | Unavailable | TooManyRequests
        ):
            return None
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempts_made - 1)))
        if isinstance(error, TooManyRequests) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return max(error.retry_after, backoff)
        return backoff
