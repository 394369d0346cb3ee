"""The wall clock, in one place: every date the tool writes comes from `now()`.

Records, queue items, run ids and site builds are stamped with UTC to the second. `SOURCE_DATE_EPOCH`
(seconds since 1970, the reproducible-builds convention) stands in for the current time when set: a site
rebuilt from the same index is then byte for byte the same, and the tests freeze time for every process
they start with one environment variable instead of asserting on whatever today is.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from .errors import UsageError


def now() -> datetime:
    """The current time (or SOURCE_DATE_EPOCH), UTC, to the second."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            seconds = int(epoch)
            if seconds < 0:
                raise ValueError("before 1970")
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (ValueError, OverflowError, OSError) as e:
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds since 1970") from e
    return datetime.now(timezone.utc).replace(microsecond=0)


def stamp(when: datetime | None = None) -> str:
    """`2026-11-22T12:00:00Z`: how the index, the queue and the API write a time (now, by default)."""
    return (when or now()).astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def today() -> str:
    """`2026-11-22`: the UTC date."""
    return now().date().isoformat()
