"""The figures of make faults computed from what it records (no services): failed stretches
of calls, the longest stretch without ingestion, the verdict against the recovery target."""

from __future__ import annotations

from bench.fault_kills import RECOVERY_TARGET_S, KillRecord, longest_gap
from bench.fault_traffic import Timeline


def timeline(calls: list[tuple[float, float, bool, str]]) -> Timeline:
    """A timeline holding these calls."""
    out = Timeline()
    out.calls.extend(calls)
    return out


def test_failures_span_first_failed_start_to_last_failed_end_within_the_window() -> None:
    calls = timeline(
        [
            (9.0, 9.5, False, "UNAVAILABLE"),  # before the window
            (10.0, 10.1, True, ""),
            (11.0, 13.0, False, "DEADLINE_EXCEEDED"),
            (12.0, 12.1, True, ""),
            (14.0, 14.5, False, "UNAVAILABLE"),
            (20.0, 20.1, False, "UNAVAILABLE"),  # after it
        ]
    )
    assert calls.failures(10.0, 20.0) == (3.5, 2, ["DEADLINE_EXCEEDED", "UNAVAILABLE"])
    assert calls.failures(15.0, 19.0) == (0.0, 0, [])


def test_ok_since_needs_a_success_that_began_after() -> None:
    calls = timeline([(1.0, 1.1, True, ""), (2.0, 2.5, False, "UNAVAILABLE")])
    assert not calls.ok_since(1.5)
    calls.calls.append((3.0, 3.1, True, ""))
    assert calls.ok_since(1.5)


def test_longest_gap_counts_the_edges_and_ignores_landings_outside() -> None:
    landings = [1.0, 5.0, 6.0, 7.0, 30.0]
    assert longest_gap(landings, 4.0, 10.0) == 3.0  # 7 -> 10, the window's end
    assert longest_gap(landings, 0.0, 8.0) == 4.0  # 1 -> 5
    assert longest_gap([], 2.0, 12.0) == 10.0


def within(stall: float | None, gap: float | None) -> bool:
    """The verdict of a kill with these figures."""
    record = KillRecord("bridge", killed_at=0.0, restarted_at=1.0)
    record.ingest_stall_s, record.ingest_gap_s = stall, gap
    return record.within_target


def test_within_target_needs_both_the_stall_and_the_longest_gap_under_it() -> None:
    assert not within(None, None)  # ingestion never seen moving
    assert within(2.0, 3.0)
    assert not within(2.0, RECOVERY_TARGET_S + 0.1)  # moved, then stopped again
    assert not within(RECOVERY_TARGET_S + 0.1, 1.0)
