"""Checkpoints survive JSON (the executor journals them) and pre-existing keys are exact."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.copy import CopyCheckpoint, PreexistingKeys

KEY_VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.datetimes(),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.dates(),
    st.times(),
    st.binary(max_size=16),
    st.uuids(),
    st.booleans(),
)


@given(st.lists(KEY_VALUES, min_size=1, max_size=3), st.integers(min_value=0))
def test_checkpoint_round_trip(key: list[object], rows: int) -> None:
    pre = PreexistingKeys.build([("a", "1"), ("b", None)], integer_key=False)
    checkpoint = CopyCheckpoint(tuple(key), rows, pre, rows_skipped=2)
    again = CopyCheckpoint.from_json(checkpoint.to_json())
    assert again == checkpoint
    assert again.to_json() == checkpoint.to_json()


@given(st.sets(st.integers(min_value=-1000, max_value=1000), max_size=200), st.integers(-1100, 1100))
def test_integer_runs_are_exact(keys: set[int], probe: int) -> None:
    pre = PreexistingKeys.build([(str(k),) for k in sorted(keys)], integer_key=True)
    assert pre.count == len(keys)
    assert pre.contains((str(probe),)) == (probe in keys)
    again = CopyCheckpoint.from_json(CopyCheckpoint(None, 0, pre).to_json()).preexisting
    assert again.contains((str(probe),)) == (probe in keys)
    # contiguous keys cost one run
    if keys and max(keys) - min(keys) + 1 == len(keys):
        assert len(pre.ranges) == 1


def test_other_values_in_keys() -> None:
    key = (Decimal("1.50"), uuid.UUID(int=5), b"\x00\xff", dt.timedelta(hours=25))
    assert CopyCheckpoint.from_json(CopyCheckpoint(key, 1).to_json()).last_key == key
    assert not PreexistingKeys()
