"""The console's pure parts: its plots, where a login may send the browser, its filters."""

from __future__ import annotations

import pytest

from eventshop.console.plots import Series, line_plot
from eventshop.console.views import ParkedFilter, action_of, safe_next
from eventshop.platform.http import ApiError


def test_a_plot_is_svg_with_a_line_per_run_a_dot_per_lone_point_and_escaped_text() -> None:
    svg = str(
        line_plot(
            "<b>rate</b>",
            [Series("a&b", [1.0, 2.0, None, 3.0, None, 4.0, 5.0], "#000")],
            plot_id="p",
        )
    )
    assert svg.startswith('<svg class="plot" id="p"')
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1  # 1-2, 3 alone, 4-5
    assert "<b>" not in svg and "&lt;b&gt;rate&lt;/b&gt;" in svg
    assert 'data-series="a&amp;b" data-latest="5.0" data-peak="5.0"' in svg


def test_an_empty_plot_still_draws_its_axis() -> None:
    svg = str(line_plot("nothing yet", [Series("x", [], "#000")]))
    assert "<line" in svg and "<polyline" not in svg and 'data-latest=""' in svg


@pytest.mark.parametrize(
    ("asked", "went"),
    [
        ("/parked?service=loyalty", "/parked?service=loyalty"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
    ],
)
def test_after_login_the_browser_stays_on_the_console(asked: str, went: str) -> None:
    assert safe_next(asked) == went


def test_filters_and_actions_are_checked() -> None:
    where = ParkedFilter.of({"service": " loyalty ", "error": "", "event_type": "OrderConfirmed"})
    assert where.query() == {"service": "loyalty", "event_type": "OrderConfirmed"}
    assert where.described == "service loyalty, event type OrderConfirmed"
    with pytest.raises(ApiError):
        ParkedFilter.of({"error": "x" * 201})
    assert action_of("replay") == "replay"
    with pytest.raises(ApiError):
        action_of("delete-everything")
