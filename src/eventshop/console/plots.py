"""Small line plots as inline SVG, drawn on the server: readable with JavaScript off, and no
charting library to ship (a few dozen points need no more)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]
    colour: str


def line_plot(
    title: str,
    series: Sequence[Series],
    *,
    unit: str = "",
    width: int = 560,
    height: int = 140,
    plot_id: str = "",
) -> Markup:
    """One plot: each series a polyline over a common x (its index) and y (0 to the maximum);
    a gap where a value is None. The latest value of each series is printed in the legend."""
    pad_l, pad_r, pad_t, pad_b = 44, 8, 32, 12
    inner_w, inner_h = width - pad_l - pad_r, height - pad_t - pad_b
    present = [v for s in series for v in s.values if v is not None]
    top = max(present, default=0.0) or 1.0
    n = max((len(s.values) for s in series), default=0)
    step = inner_w / max(n - 1, 1)
    parts = [
        f'<svg class="plot" id="{escape(plot_id)}" role="img" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text x="{pad_l}" y="12" class="plot-title">{escape(title)}</text>',
        f'<line x1="{pad_l}" y1="{pad_t + inner_h}" x2="{width - pad_r}" y2="{pad_t + inner_h}"'
        ' class="axis"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end" class="tick">'
        f"{_number(top)}{escape(unit)}</text>",
        f'<text x="{pad_l - 4}" y="{pad_t + inner_h}" text-anchor="end" class="tick">0</text>',
    ]
    legend_x = pad_l
    for s in series:
        for run in _runs(s.values):
            points = " ".join(
                f"{pad_l + i * step:.1f},{pad_t + inner_h - (v / top) * inner_h:.1f}"
                for i, v in run
            )
            if len(run) == 1:  # a lone point: a dot, a line needs two
                x, y = points.split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{escape(s.colour)}"/>')
                continue
            parts.append(
                f'<polyline fill="none" stroke="{escape(s.colour)}" stroke-width="1.5"'
                f' points="{points}"/>'
            )
        latest = next((v for v in reversed(s.values) if v is not None), None)
        parts.append(
            f'<text x="{legend_x}" y="26" class="legend" fill="{escape(s.colour)}"'
            f' data-series="{escape(s.label)}" data-latest="{"" if latest is None else latest}"'
            f' data-peak="{max((v for v in s.values if v is not None), default="")}">'
            f"{escape(s.label)}: {'-' if latest is None else _number(latest)}{escape(unit)}</text>"
        )
        legend_x += 140
    parts.append("</svg>")
    return Markup("".join(parts))


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The series cut where values are missing: each run drawn as its own line."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((i, v))
    return [r for r in runs if r]


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 or value == int(value) else f"{value:.2f}"
