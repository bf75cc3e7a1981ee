"""The bus benchmark's settings: sizes and windows, and one run's configuration and names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from eventshop.platform.settings import PlatformSettings

EVENT_TYPE = "bench.pinged"
MESSAGE_SIZE = 300
WINDOW = 1_000
PREFETCH = 1_000
ACK_EVERY = 50
WRITE_BATCH = 100
RAW_MODES = {
    "gather": "windows of 1,000 publishes gathered",
    "sliding": "a sliding window of 1,000",
}


@dataclass
class BenchConfig:
    settings: PlatformSettings
    events: int
    raw_messages: int
    write_batch: int = WRITE_BATCH
    prefetch: int = PREFETCH
    relay_batch: int = 1_000
    batch_handler: bool = True
    raw: bool = True
    #: raw and outbox phases repeated, alternating which goes first; the report's figures are
    #: the rounds' medians
    rounds: int = 1
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    #: the run's own names, from its tag: exchange, raw queue, and the schemas (and services)
    #: of the producer and of the consumer
    exchange: str = field(init=False)
    raw_queue: str = field(init=False)
    producer: str = field(init=False)
    consumer: str = field(init=False)

    def __post_init__(self) -> None:
        self.exchange = f"eventshop.bench.{self.tag}"
        self.raw_queue = f"bench_{self.tag}_raw"
        self.producer = f"bench_{self.tag}_out"
        self.consumer = f"bench_{self.tag}_in"

    @property
    def keeps_sent(self) -> bool:
        """Whether the relay keeps sent rows (marks them) or deletes them as confirmed."""
        return self.settings.retention_outbox_sent_s > 0

    def child(self, **extra: Any) -> dict[str, Any]:
        """The configuration of a child process: the broker, the database, and `extra`."""
        s = self.settings
        return {
            "amqp_url": s.amqp_url,
            "database_url": s.database_url,
            "exchange": self.exchange,
            "prefetch": self.prefetch,
            "relay_batch": self.relay_batch,
            # EVENTSHOP_RETENTION_OUTBOX_SENT_S=0: the relay deletes rows as they are confirmed
            "retention_outbox_sent_s": s.retention_outbox_sent_s,
            **extra,
        }


def timeout_for(count: int) -> float:
    """How long a child may take over `count` messages."""
    return 60.0 + count / 500.0
