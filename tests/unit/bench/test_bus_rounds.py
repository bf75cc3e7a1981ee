"""`bench bus --rounds`: several rounds' reports in one, by their medians. No I/O."""

from __future__ import annotations

from typing import Any

from eventshop.bench.bus.report import of_rounds


def _round(events: float, raw: float | None, lost: int = 0) -> dict[str, Any]:
    return {
        "events_per_s": events,
        "raw_e2e_per_s": raw,
        "ratio_to_raw_e2e": round(events / raw, 3) if raw else None,
        "cpu_us_per_event": {"relay": events / 1000, "consumer": 40.0},
        "lost": lost,
        "duplicate_effects": 0,
        "limit": f"round at {events}",
    }


def test_the_figures_are_the_rounds_medians_and_the_tables_the_median_rounds() -> None:
    report = of_rounds([_round(9_000, 6_000), _round(12_000, 6_000), _round(8_000, 4_000)])
    assert [r["ratio_to_raw_e2e"] for r in report["rounds"]] == [1.5, 2.0, 2.0]
    assert report["ratio_to_raw_e2e"] == 2.0  # the median of the rounds' ratios
    assert report["events_per_s"] == 9_000 and report["raw_e2e_per_s"] == 6_000
    assert report["cpu_us_per_event"] == {"relay": 9.0, "consumer": 40.0}
    assert report["median_round"] == 2 and report["limit"] == "round at 12000"
    assert report["targets_met"]  # the median ratio is 2.0, though one round's is 1.5


def test_lost_events_of_any_round_count_and_fail_the_run() -> None:
    report = of_rounds([_round(9_000, None), _round(10_000, None, lost=2)])
    assert report["lost"] == 2 and report["targets_met"] is False
    assert report["ratio_to_raw_e2e"] is None and report["events_per_s"] == 9_500
    assert report["median_round"] == 1  # by events/s without raw: the lower middle


def test_the_target_is_twice_raw_aio_pika_and_cannot_be_judged_without_it() -> None:
    assert not of_rounds([_round(11_000, 6_000), _round(11_500, 6_000)])["targets_met"]
    assert of_rounds([_round(9_000, None)])["targets_met"] is None  # --no-raw: nothing to judge
    assert of_rounds([_round(12_000, 6_000)])["targets_met"] is True
