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


def test_the_offered_rates_cpu_is_compared_too_as_a_figure_and_by_process() -> None:
    def at(cpu: float, orders_ms: float) -> dict[str, object]:
        return {
            "p99_final_ms": 400,
            "invariants_ok": True,
            "exit_code": 0,
            "cpu_ms_per_order_platform": cpu,
            "cpu_ms_per_order": {"orders": orders_ms},
        }

    closed = with_processes(run(80, 21, 360), {"orders": 3.0})
    a = Version("a", "a" * 40, Path("/a"), [with_rate_run(closed, at(20.0, 4.0), 88.0)])
    b = Version("b", "b" * 40, Path("/b"), [with_rate_run(closed, at(19.0, 3.5), 88.0)])
    s = summary(a, b)
    assert s["figures"]["cpu_ms_per_order_platform_at_rate"]["ratio_b_to_a"] == 0.95
    assert s["processes"]["orders"] == {"a": 3.0, "b": 3.0, "a_open_loop": 4.0, "b_open_loop": 3.5}
    assert s["open_loop"] == "at 88.0/s"


def test_a_figure_no_run_measured_is_left_out() -> None:
    a = Version("a", "a" * 40, Path("/a"), [run(80, 21, 360)])
    b = Version("b", "b" * 40, Path("/b"), [run(160, 11, 300)])
    assert "p99_final_ms_at_rate" not in summary(a, b)["figures"]


def with_processes(
    figures: dict[str, object], closed: dict[str, float], half: dict[str, float] | None = None
) -> dict[str, object]:
    """A run's figures with `bench orders`' CPU per process (and its half-rate run's)."""
    extra: dict[str, object] = {"cpu_ms_per_order": closed}
    if half is not None:
        extra["half_rate"] = {"cpu_ms_per_order": half}
    return {**figures, **extra}


def test_each_process_gets_its_median_in_both_versions_the_dearest_in_a_first() -> None:
    a = Version(
        "ecb634f",
        "e" * 40,
        Path("/a"),
        [
            with_processes(run(80, 21, 360), {"orders": 3.0, "gateway": 1.0}, {"orders": 5.0}),
            with_processes(run(78, 22, 380), {"orders": 2.0, "gateway": 1.4}, {"orders": 4.0}),
            with_processes(run(82, 20, 350), {"orders": 2.6, "gateway": 1.2}, {"orders": 4.4}),
        ],
    )
    b = Version(
        "HEAD",
        "f" * 40,
        Path("/b"),
        [
            with_processes(run(170, 10, 300), {"orders": 1.3, "gateway": 1.0, "sink": 0.4}),
            with_processes(run(160, 11, 320), {"orders": 1.5, "gateway": 0.9, "sink": 0.5}),
            run(150, 12, 900),  # a run that reported no processes counts for none
        ],
    )

    table = summary(a, b)["processes"]

    assert list(table) == ["orders", "gateway", "sink"]  # by A's median, then by name
    assert table["orders"] == {"a": 2.6, "b": 1.4, "a_open_loop": 4.4, "b_open_loop": None}
    assert table["gateway"]["a"] == 1.2 and table["gateway"]["b"] == 0.95
    assert table["sink"] == {"a": None, "b": 0.45, "a_open_loop": None, "b_open_loop": None}


def test_medians_of_an_even_number_of_runs_are_printed_to_three_places() -> None:
    a = Version("a", "a" * 40, Path("/a"), [run(80, 10.87, 300), run(82, 11.39, 310)])
    b = Version("b", "b" * 40, Path("/b"), [run(160, 5.1, 290), run(166, 5.3, 300)])
    cpu = summary(a, b)["figures"]["cpu_ms_per_order_platform"]
    assert cpu["a"]["median"] == 11.13  # not 11.129999999999999
    assert cpu["round_ratio_median"] == round((5.1 / 10.87 + 5.3 / 11.39) / 2, 3)
