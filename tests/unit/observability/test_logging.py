"""Log lines: one JSON object each, with the context bound around them, and never a secret."""

from __future__ import annotations

import io
import logging
from typing import Any

import structlog
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace

from eventshop.platform.observability.logging import (
    _SECRET_TEXT,
    REDACTED,
    _scrub,
    get_logger,
    redact_secrets,
)
from tests.support.logs import lines_of

ARGON2 = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$4ydvbm5zZWNyZXRoYXNodmFsdWVoZXJl"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLXZhbHVl"


def test_each_line_is_one_json_object_with_the_bound_context(log_lines: io.StringIO) -> None:
    log = get_logger("t")
    with structlog.contextvars.bound_contextvars(
        event_id="e1", event_type="order.created", correlation_id="c1", causation_id="x1"
    ):
        log.info("handled", order_id="o1")
        log.warning("second")
    log.info("outside")
    first, second, outside = lines_of(log_lines)
    for line in (first, second):
        assert {k: line[k] for k in ("service", "event_id", "event_type", "correlation_id")} == {
            "service": "unit-svc",
            "event_id": "e1",
            "event_type": "order.created",
            "correlation_id": "c1",
        }
        assert line["causation_id"] == "x1"
    assert first["event"] == "handled" and first["order_id"] == "o1" and first["level"] == "info"
    assert "correlation_id" not in outside and outside["service"] == "unit-svc"


def test_a_line_inside_a_span_carries_its_trace_and_span_ids(
    log_lines: io.StringIO, spans: Any
) -> None:
    with trace.get_tracer("t").start_as_current_span("work") as span:
        get_logger("t").info("inside")
    ctx = span.get_span_context()
    [line] = lines_of(log_lines)
    assert line["trace_id"] == f"{ctx.trace_id:032x}"
    assert line["span_id"] == f"{ctx.span_id:016x}"


def test_standard_library_lines_are_json_with_the_same_context(log_lines: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(correlation_id="c-std"):
        logging.getLogger("aio_pika.robust_connection").warning("connection lost: %s", "reset")
    [line] = lines_of(log_lines)
    assert line["event"] == "connection lost: reset"
    assert line["correlation_id"] == "c-std"
    assert line["service"] == "unit-svc"
    assert line["logger"] == "aio_pika.robust_connection"


def test_secrets_never_reach_a_line(log_lines: io.StringIO) -> None:
    log = get_logger("t")
    log.info(
        "account",
        password="hunter2-hunter2",
        password_hash=ARGON2,
        body={"email": "a@example.com", "password": "pw-in-a-body", "nested": {"token": "t0k"}},
        note=f"hash was {ARGON2} and token {JWT}",
        headers={"Authorization": f"Bearer {JWT}"},
        payment_token="tok_visa",
    )
    try:
        raise ValueError(f"could not verify {ARGON2}")
    except ValueError:
        log.exception("failed")
    text = log_lines.getvalue()
    for secret in ("hunter2", ARGON2, "pw-in-a-body", "t0k", JWT, "tok_visa", "$argon2id$"):
        assert secret not in text
    account, failed = lines_of(log_lines)
    assert account["password"] == REDACTED and account["password_hash"] == REDACTED
    assert account["body"]["email"] == "a@example.com"  # the rest of the line is kept
    assert account["body"]["password"] == REDACTED
    assert account["body"]["nested"]["token"] == REDACTED
    assert account["note"] == f"hash was {REDACTED} and token {REDACTED}"
    assert "ValueError: could not verify" in failed["exception"]


def test_redaction_keeps_ordinary_values() -> None:
    event = {"event": "x", "order_id": "o1", "count": 3, "skus": ["a", "b"], "hash_key": "k"}
    assert redact_secrets(None, "info", dict(event)) == event


async def test_a_hash_made_by_the_users_service_is_masked_anywhere(log_lines: io.StringIO) -> None:
    from eventshop.services.users.adapters import Argon2Passwords

    made = await Argon2Passwords(time_cost=1, memory_kib=8, parallelism=1).hash("pw-1234567")
    get_logger("t").error("row", row=(("email", "a@example.com"), ("stored", made)))
    assert made not in log_lines.getvalue()
    assert made.split("$")[-1] not in log_lines.getvalue()  # nor its hash part alone


def test_python_warnings_are_json_lines_too(log_lines: io.StringIO) -> None:
    import warnings

    with warnings.catch_warnings():  # (pytest records warnings itself: route them again here)
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        warnings.simplefilter("always")
        warnings.warn("the HMAC key is short", UserWarning, stacklevel=1)
        logging.captureWarnings(False)
    [line] = lines_of(log_lines)
    assert "the HMAC key is short" in line["event"] and line["logger"] == "py.warnings"


# -- what keeps a line cheap changes nothing it says -------------------------------------------


#: fragments of what the pattern masks, mixed with any text
FRAGMENTS = [
    *("Bearer abc.def", "BEARER xyz", "bEaReR  tok=", "$2b$12$" + "a" * 53),
    *("$argon2id$v=19$m=1,t=2,p=1$c2FsdA$aGFzaA", "eyJhbGciOi.eyJzdWIiOi.sig-_x"),
    *("$", "eyJ", "bearer"),
]


@given(st.lists(st.one_of(st.text(max_size=40), st.sampled_from(FRAGMENTS)), max_size=4))
def test_the_quick_look_never_lets_through_what_the_pattern_would_mask(parts: list[str]) -> None:
    text = "".join(parts)
    assert _scrub(text) == _SECRET_TEXT.sub(REDACTED, text)


def test_a_value_json_cannot_hold_in_64_bits_is_still_written(log_lines: io.StringIO) -> None:
    get_logger("t").info("big", n=2**70, keyed={1: "x"})
    [line] = lines_of(log_lines)
    assert line["n"] == 2**70 and line["keyed"] == {"1": "x"}
