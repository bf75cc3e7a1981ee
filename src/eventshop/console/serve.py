"""`eventshop console`: the console's HTTP server, until SIGTERM or SIGINT."""

from __future__ import annotations

import uvicorn

from eventshop.console.app import console_app
from eventshop.console.settings import ConsoleSettings
from eventshop.platform.observability.logging import configure_logging


def run(settings: ConsoleSettings | None = None) -> None:
    settings = settings or ConsoleSettings()
    configure_logging("console")
    uvicorn.run(
        console_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        # the live streams end when the browser goes; at a stop, do not wait for them
        timeout_graceful_shutdown=2,
    )
