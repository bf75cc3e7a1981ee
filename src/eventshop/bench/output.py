"""How every benchmark command ends: its tables for a human on stderr, then its figures as one
JSON object on the last line of stdout (where the README's figures and scripts read them)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console


def emit(
    report: Mapping[str, Any],
    print_report: Callable[[Mapping[str, Any], Console], None],
    console: Console,
) -> None:
    print_report(report, console)
    print(json.dumps(report))
