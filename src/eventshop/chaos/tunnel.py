"""The chaos command's way into a compose project's network (ADR 0015): TCP forwarded, unchanged,
from a port of this container to a server of the network, as the `chaos-tunnel` container of
deploy/docker-compose.chaos.yml, which publishes those ports on the host's 127.0.0.1 for one
chaos run.

    python -m eventshop.chaos.tunnel postgres:5432 rabbitmq:5672

Each `host:port` is listened for on the same port of every address of the container; the name
is looked up again for every connection, so a server whose container started again (and may
have another address) is found.
"""

from __future__ import annotations

import asyncio
import sys

from eventshop.chaos.proxy import FaultProxy


def parse(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{target!r}: host:port expected")
    return host, int(port)


async def serve(targets: list[tuple[str, int]]) -> None:
    for host, port in targets:
        await FaultProxy((host, port)).start(port, host="0.0.0.0")  # every address of the container
        print(f"chaos-tunnel: :{port} -> {host}:{port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    targets = [parse(t) for t in (sys.argv[1:] if argv is None else argv)]
    if not targets:
        raise SystemExit("usage: python -m eventshop.chaos.tunnel host:port [host:port ...]")
    asyncio.run(serve(targets))


if __name__ == "__main__":
    main()
