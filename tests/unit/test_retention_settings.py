"""The retention windows' settings (ADR 0009): defaults, and the refusal at start of an inbox
window the retry ladder could outlast. No I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from eventshop.platform.retention import RETAINED, keep_tables_bounded
from eventshop.platform.service import PLATFORM_JOBS
from eventshop.platform.settings import PlatformSettings, retry_ladder_s


def test_the_documented_defaults() -> None:
    s = PlatformSettings()
    assert s.retention_inbox_s == 7 * 86_400
    assert s.retention_outbox_sent_s == 3_600
    assert s.retention_idempotency_keys_s == 86_400
    assert (s.retention_interval_s, s.retention_batch) == (600, 1_000)
    assert retry_ladder_s(s.retry_delays_ms, s.handler_timeout_s) == 36 + 4 * 30


def test_an_inbox_window_the_retry_ladder_outlasts_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTSHOP_RETENTION_INBOX_S", "120")
    with pytest.raises(ValidationError) as refused:
        PlatformSettings()
    message = str(refused.value)
    assert "EVENTSHOP_RETENTION_INBOX_S=120 is shorter than the retry ladder" in message
    assert "156 s" in message and "ADR 0009" in message


def test_the_ladder_counts_every_delay_and_every_handler_run() -> None:
    with pytest.raises(ValidationError, match="shorter than the retry ladder"):
        PlatformSettings(retry_delays_ms=[60_000, 600_000], retention_inbox_s=600)
    ok = PlatformSettings(retry_delays_ms=[100, 200], handler_timeout_s=5, retention_inbox_s=16)
    assert ok.retention_inbox_s == 16


@pytest.mark.parametrize(
    ("variable", "value"),
    [("IDEMPOTENCY_KEYS_S", "59"), ("BATCH", "0"), ("INTERVAL_S", "0")],
)
def test_nonsense_windows_are_refused(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"EVENTSHOP_RETENTION_{variable}", value)
    with pytest.raises(ValidationError):
        PlatformSettings()


def test_every_service_runs_the_job_and_the_archive_record_is_never_in_it() -> None:
    assert keep_tables_bounded in PLATFORM_JOBS
    assert [t.table for t in RETAINED] == ["inbox", "outbox_sent", "idempotency_keys"]
    assert "archived_events" not in {t.table for t in RETAINED}
