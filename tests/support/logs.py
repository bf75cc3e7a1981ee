"""Log lines captured as a service writes them: structlog and the standard library's logging
configured as `eventshop run` does (JSON), into a buffer; everything restored afterwards."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import structlog

from eventshop.platform.observability.logging import configure_logging


@contextlib.contextmanager
def captured_logs(service: str) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging(service, json=True, stream=buffer, cache=False)
    try:
        yield buffer
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)


def lines_of(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The JSON objects written so far, one a line."""
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
