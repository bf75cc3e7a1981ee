"""A TCP proxy on loopback that breaks the link it carries on command: the `network` scenario's
tool. netem needs a kernel module and root in the network's namespace, toxiproxy is not packaged
here, and the Python proxies on PyPI either corrupt a stream (dropping chunks of TCP) or cannot
stall one and let it go on (ADR 0014).

A service is started with its broker or database address pointing at the proxy, which forwards
every byte both ways to the real server until told otherwise:

- `latency(mean_s, jitter_s)`: every chunk waits mean ± jitter (uniform) before it goes on, in
  order (a chunk never overtakes the one before it, as on one TCP stream);
- `black_hole()` until `heal()`: nothing moves either way and new connections hang before they
  reach the server, as when a route is gone; TCP would retransmit, so nothing is lost, only
  late: bytes already read wait in the proxy and go on when the hole heals;
- `bandwidth(bytes_per_s)`: a slow link; each chunk waits its size's share of a second;
- `reset()`: every open connection is cut with a TCP reset both ways (SO_LINGER 0), at once.

Everything runs in the caller's event loop; `close()` cuts every connection and stops listening.
`upstream_of(url)` is the server a URL names, `via_proxy(url, port)` the same URL through a
proxy listening on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

CHUNK = 64 * 1024


def upstream_of(url: str, default_port: int) -> tuple[str, int]:
    """The (host, port) a broker or database URL names: what a proxy forwards to."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def via_proxy(url: str, port: int) -> str:
    """`url` with its host and port replaced by a proxy's on loopback (its user kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class LinkFaults:
    """What the proxy does to the bytes it carries now (shared by every connection)."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    bytes_per_s: float | None = None
    #: set while the link works; cleared by a black hole
    open: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.open.set()


class FaultProxy:
    def __init__(
        self, upstream: tuple[str, int], *, rng: random.Random | None = None, name: str = ""
    ) -> None:
        self.upstream = upstream
        self.name = name or f"{upstream[0]}:{upstream[1]}"
        self.faults = LinkFaults()
        self._rng = rng or random.Random()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        #: connections accepted in all (the tests read it)
        self.accepted = 0
        self.resets = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, host, port)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    # -- the faults -----------------------------------------------------------------------------
    def latency(self, mean_s: float, jitter_s: float = 0.0) -> None:
        self.faults.latency_s, self.faults.jitter_s = mean_s, jitter_s

    def bandwidth(self, bytes_per_s: float | None) -> None:
        self.faults.bytes_per_s = bytes_per_s

    def black_hole(self) -> None:
        self.faults.open.clear()

    def heal(self) -> None:
        """Every fault lifted: no latency, no limit, the link open."""
        self.faults.latency_s = self.faults.jitter_s = 0.0
        self.faults.bytes_per_s = None
        self.faults.open.set()

    def reset(self) -> int:
        """Cut every open connection with a reset; how many were cut."""
        cut = 0
        for link in list(self._links):
            link.reset()
            cut += 1
        self.resets += cut
        return cut

    # -- the forwarding -------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            # a black hole: the connection hangs before it reaches the server
            await self.faults.open.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                link.reset()
                return
            link.upstream = up_writer
            await asyncio.gather(
                self._pump(reader, up_writer, link),
                self._pump(up_reader, writer, link),
            )
        except (OSError, asyncio.IncompleteReadError):
            link.reset()
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        """Copy one direction, chunk by chunk, each held as the faults say, in order."""
        due = 0.0  # when the previous chunk went on: the next never goes before it
        f = self.faults
        while not link.cut:
            chunk = await reader.read(CHUNK)
            if not chunk:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            await f.open.wait()
            delay = f.latency_s + (self._rng.uniform(-f.jitter_s, f.jitter_s) if f.jitter_s else 0)
            if f.bytes_per_s:
                delay += len(chunk) / f.bytes_per_s
            due = max(due, time.monotonic() + max(0.0, delay))
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await f.open.wait()  # a hole that opened while the chunk waited holds it too
            if link.cut:
                return
            writer.write(chunk)
            await writer.drain()


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.cut = False

    def reset(self) -> None:
        self.cut = True
        for w in (self.client, self.upstream):
            if w is not None:
                _abort_with_reset(w)

    def close(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None and not w.is_closing():
                w.close()


def _abort_with_reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # linger on with a zero timeout: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
