"""The cycle grid, with exact times: no drift, missed ticks skipped (never run in a burst)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carlightd.core.schedule import Schedule


def test_cycles_on_time_follow_the_grid_without_drift() -> None:
    schedule = Schedule(origin=100.0, period_s=0.5)
    dues = []
    now = 100.0
    for _ in range(1000):
        now += 0.3  # every cycle takes 0.3 s of its 0.5 s
        slot = schedule.next_slot(now)
        assert slot.on_time
        dues.append(slot.due)
        now = slot.due
    # Tick n is at origin + n·period exactly: the 0.3 s of work never shifts the grid.
    assert dues[-1] == pytest.approx(100.0 + 1000 * 0.5)
    assert dues[:3] == pytest.approx([100.5, 101.0, 101.5])


def test_a_late_wake_up_does_not_move_later_ticks() -> None:
    schedule = Schedule(origin=0.0, period_s=1.0)
    assert schedule.next_slot(0.9).due == 1.0
    # The loop woke 0.4 s late and the cycle took 0.5 s: still on time, and the grid stays put.
    slot = schedule.next_slot(1.9)
    assert slot.on_time
    assert slot.due == 2.0


def test_an_overrun_skips_the_missed_ticks() -> None:
    schedule = Schedule(origin=0.0, period_s=1.0)
    schedule.next_slot(0.2)  # cycle 0 ends, cycle 1 due at 1.0
    slot = schedule.next_slot(3.6)  # cycle 1 (due to end by 2.0) ended at 3.6
    assert slot.missed == 2  # ticks 2.0 and 3.0 are skipped ...
    assert slot.due == 4.0  # ... and the next cycle starts on the grid again, not at 3.6
    assert slot.late_s == pytest.approx(1.6)
    assert not slot.on_time
    assert schedule.next_slot(4.2).due == 5.0  # back to one tick at a time


def test_ending_exactly_on_the_tick_is_on_time() -> None:
    schedule = Schedule(origin=0.0, period_s=0.25)
    slot = schedule.next_slot(0.25)
    assert slot.on_time
    assert slot.due == 0.25


def test_restart_begins_a_fresh_grid_with_the_new_period() -> None:
    schedule = Schedule(origin=0.0, period_s=1.0)
    schedule.next_slot(0.1)
    slot = schedule.restart(now=1.37, period_s=0.2)
    assert slot.due == pytest.approx(1.57)
    assert schedule.next_slot(1.6).due == pytest.approx(1.77)


@pytest.mark.parametrize("period_s", [0.0, -1.0])
def test_a_period_must_be_positive(period_s: float) -> None:
    with pytest.raises(ValueError, match="period_s must be positive"):
        Schedule(origin=0.0, period_s=period_s)


@given(
    period_s=st.floats(min_value=0.01, max_value=10.0),
    work=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=200),
)
def test_every_start_is_on_the_grid_in_the_future_and_ticks_are_never_bunched(
    period_s: float, work: list[float]
) -> None:
    """Whatever each cycle costs (in periods), the next start is a grid tick not in the past,
    strictly after the previous start, and every tick is either run or counted as missed."""
    schedule = Schedule(origin=0.0, period_s=period_s)
    start, ticks_accounted = 0.0, 0
    for cost in work:
        end = start + cost * period_s
        slot = schedule.next_slot(end)
        ticks = slot.due / period_s
        assert ticks == pytest.approx(round(ticks), abs=1e-6)  # on the grid
        assert slot.due >= end - 1e-9  # never in the past: no burst of catch-up cycles
        assert slot.due > start  # strictly later than the cycle that just ran
        if cost < 0.999:
            assert slot.on_time
        elif cost > 1.001:
            assert not slot.on_time
            assert slot.missed >= 1
        ticks_accounted += 1 + slot.missed
        assert round(ticks) == ticks_accounted  # each tick run once or skipped once
        start = slot.due
