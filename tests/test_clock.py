"""One clock for every date the tool writes; SOURCE_DATE_EPOCH freezes it (conftest sets it for the suite)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import FROZEN

from auditor import clock
from auditor.errors import UsageError


def test_the_suite_runs_at_a_frozen_instant():
    assert clock.stamp() == FROZEN and clock.today() == FROZEN[:10]


def test_source_date_epoch_sets_the_time_and_a_bad_one_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert clock.stamp() == "1970-01-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "-5")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH='-5' is not a number of seconds since 1970"):
        clock.now()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH='yesterday' is not a number of seconds since 1970"):
        clock.now()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert abs(clock.now() - datetime.now(timezone.utc)) < timedelta(seconds=5)  # the real clock, to the second
    assert clock.now().microsecond == 0
