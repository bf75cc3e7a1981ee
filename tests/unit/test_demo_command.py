"""`eventshop demo` starts the platform by calling the `up` command as a function: every option
of `up` must then be given a plain value, or typer's OptionInfo default reaches the code (a new
option of `up` broke the README's first command this way)."""

from __future__ import annotations

from typing import Any

import pytest

from eventshop.cli import main
from eventshop.tooling import supervise


class Started(Exception):
    pass


def test_the_demo_starts_the_platform_with_one_process_of_each_on_the_machines_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    def start(layout: supervise.Layout, env_extra: Any = None, **kwargs: Any) -> None:
        seen.update(env_extra=env_extra, **kwargs)
        raise Started

    monkeypatch.delenv("EVENTSHOP_BROKER", raising=False)
    monkeypatch.setattr(supervise, "start", start)
    with pytest.raises(Started):
        main.demo(orders=1, concurrency=1, start=True)
    assert seen["replicas"] == {}
    assert "EVENTSHOP_BROKER" not in (seen["env_extra"] or {})
