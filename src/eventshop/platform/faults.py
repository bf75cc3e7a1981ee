"""Fault points for tests that kill a process at a precise moment.

`EVENTSHOP_FAULT=relay.before_publish` makes the process exit at once (as a SIGKILL would
leave it: no cleanup, no flush) the first time it reaches that point. Off unless the variable
is set; the check is one dict lookup.
"""

from __future__ import annotations

import os

_armed = set(filter(None, os.environ.get("EVENTSHOP_FAULT", "").split(",")))


def point(name: str) -> None:
    if name in _armed:
        os._exit(137)
