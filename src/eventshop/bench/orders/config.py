"""The order benchmark's configuration, its benchmark profile and its constants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from eventshop.platform.settings import PlatformSettings

FINAL_EVENTS = ("order.confirmed", "order.cancelled")
#: a confirmed order's events in the saga's order: the time between two neighbours is one step
#: (a relay, the broker, a consumer's window; payments' charge job between its two)
SAGA_STEPS = (
    "order.created",
    "inventory.reserved",
    "payment.requested",
    "payment.succeeded",
    "order.confirmed",
)
#: RabbitMQ's end-to-end limit on this machine for persistent messages (docs/PERFORMANCE.md §2)
BROKER_LIMIT_MSG_S = 37_000

#: the benchmark profile, on top of supervise.DEMO_ENV: nothing but the platform's own work
#: should bound the rate (a fast payment provider, no rate limit or fraud velocity rule that a
#: benchmark's 50 shoppers would trip, an order timeout that a backlog does not reach), and
#: traces sampled as a production would (1%), not every request and SQL statement
BENCH_ENV = {
    "EVENTSHOP_TRACE_SAMPLE_RATIO": "0.01",
    "EVENTSHOP_PAYMENTS_PROVIDER_LATENCY_MS": "5",
    "EVENTSHOP_PAYMENTS_FRAUD_VELOCITY_MAX_REQUESTS": "1000000000",
    "EVENTSHOP_GATEWAY_RATE_PER_USER": "1000000",
    "EVENTSHOP_GATEWAY_RATE_PER_IP": "1000000",
    "EVENTSHOP_ORDERS_TIMEOUT_S": "120",
}

Say = Callable[[str], object]


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class OrdersBenchConfig:
    orders: int = 2_000
    concurrency: int = 16
    #: offered orders/s (open loop); None: closed loop at `concurrency`
    rate: float | None = None
    arrivals: Literal["poisson", "even"] = "poisson"
    #: then a second, open-loop run at half the final-state rate of the first
    half_rate: bool = False
    products: int = 500
    users: int = 50
    #: each order has 1..max_lines lines (distinct skus), 1..2 units each
    max_lines: int = 3
    #: apply the benchmark profile to a running platform (False: use it as it is)
    configure: bool = True
    #: leave the platform running (with the benchmark profile) at the end
    keep_running: bool = False
    final_timeout_s: float = 180.0
    #: PostgreSQL publishes a backend's statistics up to ~10 s late when it goes idle
    stats_wait_s: float = 11.0
    idle_s: float = 5.0
    seed: int | None = None
    #: processes per service when the benchmark starts the platform (`eventshop up --replicas`)
    replicas: dict[str, int] = field(default_factory=dict)
    database_url: str = field(default_factory=lambda: PlatformSettings().database_url)
    amqp_url: str = field(default_factory=lambda: PlatformSettings().amqp_url)
    exchange: str = field(default_factory=lambda: PlatformSettings().exchange)
