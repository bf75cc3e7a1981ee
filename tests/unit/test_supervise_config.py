"""`eventshop up` writes the supervisor's configuration: the demo's settings apply only where
the environment says nothing (what is set in the shell wins), and the file, which holds every
service's passwords, is readable by its owner only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from eventshop.tooling import supervise


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> supervise.Layout:
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(tmp_path / "secrets"))
    return supervise.Layout(tmp_path)


def program_env(layout: supervise.Layout, program: str) -> str:
    text = layout.conf.read_text()
    section = text.split(f"[program:{program}]", 1)[1].split("\n[", 1)[0]
    return next(line for line in section.splitlines() if line.startswith("environment="))


def test_the_demo_profile_applies_where_the_environment_is_silent(
    layout: supervise.Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTSHOP_ORDERS_TIMEOUT_S", raising=False)
    supervise.write_config(layout, {})
    assert 'EVENTSHOP_ORDERS_TIMEOUT_S="10"' in program_env(layout, "orders")


def test_the_environment_wins_over_the_demo_profile(
    layout: supervise.Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSHOP_ORDERS_TIMEOUT_S", "42")
    supervise.write_config(layout, {})
    # not written over: the service inherits the shell's value from supervisord
    assert "EVENTSHOP_ORDERS_TIMEOUT_S" not in program_env(layout, "orders")


def test_the_configuration_is_readable_by_its_owner_only(layout: supervise.Layout) -> None:
    supervise.write_config(layout, {})
    assert stat.S_IMODE(layout.conf.stat().st_mode) == 0o600
    assert "EVENTSHOP_DATABASE_URL" in program_env(layout, "orders")
