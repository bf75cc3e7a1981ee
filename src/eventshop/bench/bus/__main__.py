"""A child process of the bus benchmark: `python -m eventshop.bench.bus <role>`, its
configuration the first line of its stdin (protocol.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eventshop.bench.bus import raw, roles
from eventshop.bench.bus.protocol import read_config

ROLES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "raw-publish": raw.raw_publish,
    "raw-consume": raw.raw_consume,
    "writer": roles.writer,
    "relay": roles.relay,
    "consumer": roles.consumer,
}


def child_main(argv: Sequence[str]) -> None:
    import uvloop

    from eventshop.platform.observability.logging import configure_logging

    role, cfg = argv[0], read_config()
    configure_logging(f"bench-{role}", level="WARNING", json=True)
    uvloop.run(ROLES[role](cfg))


if __name__ == "__main__":
    child_main(sys.argv[1:])
