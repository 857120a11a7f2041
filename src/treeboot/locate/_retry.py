"""The retry policy of every HTTP request (metadata and images alike).

- A connection the server closed or reset before answering (a kept-alive connection a load
  balancer dropped) is retried once, at once, on a new connection: GET and HEAD are
  idempotent (RFC 9110 section 9.2.2).
- 408, 429, 500, 502, 503 and 504 are retried up to :attr:`RetryPolicy.attempts` times in all,
  after the delay the server asks for in ``Retry-After`` (seconds or an HTTP-date, RFC 9110
  section 10.2.3), else after an exponential backoff with jitter. A delay longer than
  :attr:`RetryPolicy.max_delay` is not waited for: the request fails at once, quoting it.
- No retry starts that would end after the caller's deadline (``--max-time``).

httpx retries only failed connects (``HTTPTransport(retries=)``), not statuses nor stale
pooled connections, and a retry library (tenacity, stamina) would not know Retry-After; the
policy is these few pure functions, the loop is in :mod:`treeboot.locate.http`.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class RetryRefused(Exception):
    """No retry: ``reason`` says why (for the error message)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # requests in all for one transient status (3 retries)
    base: float = 0.5  # seconds: backoff before the 2nd attempt, doubled for each next one
    max_delay: float = 60.0  # the longest wait honoured (Retry-After or backoff)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter after failed attempt ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def delay(self, attempt: int, retry_after: str | None, remaining: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``; RetryRefused when there is none.

        ``remaining`` is the time left before the caller's deadline (None: no deadline).
        """
        if attempt >= self.attempts:
            raise RetryRefused(f"still failing after {attempt} attempts")
        asked = parse_retry_after(retry_after)
        if asked is not None and asked > self.max_delay:
            raise RetryRefused(
                f"the server asks to retry after {retry_after!r} ({asked:.0f} s), longer than"
                f" the {self.max_delay:g} s treeboot waits"
            )
        wait = asked if asked is not None else self.backoff(attempt)
        if remaining is not None and wait >= remaining:
            raise RetryRefused(f"a retry in {wait:.1f} s would end after --max-time")
        return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now: delay-seconds or an HTTP-date; None if invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate gives naive for "-0000"
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
