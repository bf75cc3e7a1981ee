"""The A/B command's arithmetic: who goes first in each round, medians, ranges, ratios."""

from __future__ import annotations

from pathlib import Path

from eventshop.bench.ab import Version, order_of_rounds, summary, with_rate_run


def test_each_round_swaps_who_goes_first() -> None:
    assert order_of_rounds(4) == [(0, 1), (1, 0), (0, 1), (1, 0)]


def run(rate: float, cpu: float, p99: float, *, ok: bool = True) -> dict[str, object]:
    return {
        "orders_per_s_final": rate,
        "cpu_ms_per_order_platform": cpu,
        "p99_final_ms_at_half_rate": p99,
        "invariants_ok": ok,
        "exit_code": 0,
    }


def test_medians_ranges_and_the_ratio_of_the_medians() -> None:
    a = Version(
        "ecb634f", "e" * 40, Path("/a"), [run(80, 21, 360), run(78, 22, 380), run(82, 20, 350)]
    )
    b = Version(
        "HEAD", "f" * 40, Path("/b"), [run(170, 10, 300), run(160, 11, 320), run(150, 12, 900)]
    )
    s = summary(a, b)
    rate = s["figures"]["orders_per_s_final"]
    assert rate["a"]["median"] == 80 and rate["b"]["median"] == 160
    assert rate["a"]["range"] == [78, 82] and rate["ratio_b_to_a"] == 2.0
    assert s["figures"]["cpu_ms_per_order_platform"]["ratio_b_to_a"] == round(11 / 21, 3)
    assert s["figures"]["p99_final_ms_at_half_rate"]["b"]["median"] == 320  # not the outlier
    assert s["rounds"] == 3 and s["every_run_ok"]


def test_a_run_whose_invariants_failed_spoils_the_window() -> None:
    a = Version("a", "a" * 40, Path("/a"), [run(80, 21, 360)])
    b = Version("b", "b" * 40, Path("/b"), [run(170, 10, 300, ok=False)])
    assert not summary(a, b)["every_run_ok"]


def test_each_rounds_pair_gives_a_ratio_and_a_window_that_drifts_moves_both() -> None:
    # the machine slows down over the window: each round's pair still says B is twice A
    a = Version("a", "a" * 40, Path("/a"), [run(100, 20, 300), run(80, 25, 300), run(60, 30, 300)])
    b = Version(
        "b", "b" * 40, Path("/b"), [run(200, 10, 300), run(160, 12, 300), run(120, 15, 300)]
    )
    rate = summary(a, b)["figures"]["orders_per_s_final"]
    assert rate["round_ratios"] == [2.0, 2.0, 2.0] and rate["round_ratio_median"] == 2.0


def test_the_same_offered_rate_compares_p99_like_for_like() -> None:
    def at(p99: float, ok: bool = True) -> dict[str, object]:
        return {"p99_final_ms": p99, "invariants_ok": ok, "exit_code": 0}

    a = Version("a", "a" * 40, Path("/a"), [with_rate_run(run(80, 21, 360), at(500), 60.0)])
    b = Version("b", "b" * 40, Path("/b"), [with_rate_run(run(160, 11, 300), at(250), 60.0)])
    s = summary(a, b)
    assert s["figures"]["p99_final_ms_at_rate"]["ratio_b_to_a"] == 0.5
    assert s["every_run_ok"]
    spoiled = Version(
        "b", "b" * 40, Path("/b"), [with_rate_run(run(160, 11, 300), at(250, False), 60.0)]
    )
    assert not summary(a, spoiled)["every_run_ok"]


def test_a_figure_no_run_measured_is_left_out() -> None:
    a = Version("a", "a" * 40, Path("/a"), [run(80, 21, 360)])
    b = Version("b", "b" * 40, Path("/b"), [run(160, 11, 300)])
    assert "p99_final_ms_at_rate" not in summary(a, b)["figures"]
