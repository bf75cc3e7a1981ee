"""Platform settings: one pydantic-settings class, env prefix EVENTSHOP_, loopback defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from eventshop.platform.secrets import read_secret, secret


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_", extra="ignore")

    #: unset: the operator's user when this machine's set-up made one (platform/secrets.py),
    #: for the CLI's tools; every service is given its own user's URL by whoever starts it.
    #: A cluster: every node's URL, comma-separated (the same user, password and vhost in
    #: each); a connection goes to the first that answers and moves to another when it is lost
    amqp_url: str = Field(default_factory=lambda: default_amqp_url())
    #: PostgreSQL; `eventshop up` gives each service its own role's URL (tooling/dbroles.py)
    database_url: str = "postgresql://root@127.0.0.1:5432/eventshop"
    #: Redis: the gateway's sessions and rate limits, the catalog's cache
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: the topic exchange every event is published to (routing key: its type)
    exchange: str = "eventshop.events"
    #: "per_service": every service connects as a broker user named after it, and a consumer
    #: accepts an event only from the user of its producer (platform/bus/provenance.py);
    #: "shared": one user for all (tests and tools, each on a vhost of its own)
    broker_identity: Literal["per_service", "shared"] = "per_service"
    #: unacked messages a consumer may hold; also the largest batch handled in one transaction
    prefetch: int = Field(default=256, ge=1, le=10_000)
    #: deliveries of one message from a service's queue before the broker parks it (a RabbitMQ
    #: policy `eventshop up` and `eventshop provision` set, ADR 0008): a message that kills its
    #: consumer, or that a consumer keeps handing back, is redelivered only so often. Failures the
    #: handler raises do not count: the retry ladder acks and re-publishes them
    max_deliveries: int = Field(default=10, ge=2, le=1_000)
    #: the retry ladder: delays in milliseconds, one delay queue each
    retry_delays_ms: list[int] = Field(default_factory=lambda: [1_000, 5_000, 30_000])
    #: a handler taking longer than this counts as failed (the bulkhead's bound)
    handler_timeout_s: float = 30.0
    #: how long a publish may wait for its confirm before it counts as failed
    confirm_timeout_s: float = 10.0
    #: how long a starting service waits for its database and its broker to be reachable
    #: before it gives up and exits (platform/reach.py); 0: it does not wait
    startup_wait_s: float = Field(default=120.0, ge=0)
    #: the relay's polling fallback when no NOTIFY arrives, and how long a standby waits for
    #: the relay lock at a time before it checks whether it is stopping
    relay_poll_s: float = 1.0
    #: outbox rows the relay publishes per round (one write, one wait for their confirms)
    relay_batch: int = Field(default=1_000, ge=1)
    #: the address services listen on: loopback on a host; 0.0.0.0 in a container, whose
    #: published ports are then bound to the host's loopback by the compose file
    http_host: str = "127.0.0.1"
    #: bind the HTTP port with SO_REUSEPORT, so several processes of one service share it and
    #: the kernel spreads connections among them (`eventshop up --replicas` sets it for a
    #: service of more than one process; ADR 0012). Off, a second process on the port fails
    #: to start, which is what one process per service wants
    reuse_port: bool = False
    #: how often a process that does not lead a background job tries to take it over, and
    #: how often the leader checks that its lock is still held: a takeover after the leader
    #: dies takes at most this long (the relay's standbys wait in the lock's queue instead)
    job_leader_poll_s: float = Field(default=1.0, gt=0, le=60)
    #: connections a service process's pool may open. PostgreSQL allows 100 in all by default:
    #: `eventshop up --replicas` divides a service's share among its processes (ADR 0012)
    db_pool_max: int = Field(default=10, ge=1, le=100)
    #: the addresses of reverse proxies whose X-Forwarded-For is believed (JSON list in
    #: EVENTSHOP_TRUSTED_PROXIES); none by default: the client's own address is what counts
    trusted_proxies: list[str] = Field(default_factory=list)
    #: the key the gateway signs forwarded identities with and the services check them with
    #: (platform/http.py); unset: this installation's own, made on first use (secrets.py)
    internal_key: SecretStr | None = None

    #: how long an inbox row (an event id a consumer handled) is kept: a copy of the event
    #: arriving within it is refused as a duplicate. At least the retry ladder's whole path
    #: (refused at start otherwise); 7 days also covers a service stopped over a long weekend
    #: with copies waiting in its queue. After it, business keys absorb a copy (ADR 0009)
    retention_inbox_s: float = Field(default=7 * 86_400.0, gt=0)
    #: how long a published (sent) outbox row is kept in `outbox_sent`, for inspection; an
    #: unsent row is never deleted, however old (the archive keeps every event for good). 0:
    #: the relay deletes each row as its publish is confirmed (nothing is left to look at,
    #: ADR 0009 and 0021)
    retention_outbox_sent_s: float = Field(default=3_600.0, ge=0)
    #: how long an HTTP Idempotency-Key is honoured, at least (orders' `idempotency_keys`): a
    #: retry within it gets the first answer; after it, the key is free again (ADR 0009)
    retention_idempotency_keys_s: float = Field(default=86_400.0, ge=60)
    #: how often each service's retention job runs (one replica deletes at a time)
    retention_interval_s: float = Field(default=600.0, gt=0)
    #: rows one retention transaction deletes at most (each batch commits on its own)
    retention_batch: int = Field(default=1_000, ge=1, le=100_000)

    #: tracked allocations (beyond frees) between two young collections of CPython's cyclic
    #: garbage collector in a service process: above what a consumer's window keeps alive, so
    #: a window is not promoted and walked again (platform/collector.py, ADR 0022). 700 is
    #: Python's own
    gc_young_threshold: int = Field(default=50_000, ge=100, le=10_000_000)
    #: once a service process has started, keep every object it built so far out of the
    #: collector's walks (`gc.freeze`): they live as long as the process anyway (ADR 0022)
    gc_freeze: bool = True

    @model_validator(mode="after")
    def _inbox_outlives_the_retry_ladder(self) -> PlatformSettings:
        ladder_s = retry_ladder_s(self.retry_delays_ms, self.handler_timeout_s)
        if self.retention_inbox_s <= ladder_s:
            raise ValueError(
                f"EVENTSHOP_RETENTION_INBOX_S={self.retention_inbox_s:g} is shorter than the retry"
                f" ladder's longest path ({ladder_s:g} s: the delays"
                f" {self.retry_delays_ms} ms plus {len(self.retry_delays_ms) + 1} handler"
                " timeouts): a retried copy could arrive after its inbox row is deleted and take"
                " effect twice. Make it longer (default 7 days, ADR 0009)"
            )
        return self

    @field_validator("amqp_url")
    @classmethod
    def _one_broker_or_one_cluster(cls, value: str) -> str:
        broker_urls(value)
        return value

    def identity_key(self) -> bytes:
        if self.internal_key is not None:
            return self.internal_key.get_secret_value().encode()
        return secret("internal-identity").encode()


def retry_ladder_s(retry_delays_ms: list[int], handler_timeout_s: float) -> float:
    """The longest an event spends between its first delivery and its last run on the retry
    ladder: every delay, and every run of its handler timing out."""
    return sum(retry_delays_ms) / 1_000 + (len(retry_delays_ms) + 1) * handler_timeout_s


#: the broker user of operators' tools (`eventshop dlq`, `status`, the benchmarks): every right
#: on the platform's vhost, and the `impersonator` tag to replay a parked message as the service
#: that parked it
OPERATOR_USER = "eventshop-operator"


def default_amqp_url() -> str:
    password = read_secret("amqp-operator")
    if password is None:  # not set up by `eventshop up` (yet): RabbitMQ's own development user
        return "amqp://guest:guest@127.0.0.1:5672/eventshop"
    return f"amqp://{OPERATOR_USER}:{password}@127.0.0.1:5672/eventshop"


def broker_urls(amqp_url: str) -> list[str]:
    """The URLs of EVENTSHOP_AMQP_URL: one broker's, or a cluster's nodes' (comma-separated).

    The nodes of one cluster are one broker to a client: the same user, password, vhost and
    options at every address; only the host and port may differ."""
    urls = [u.strip() for u in amqp_url.split(",") if u.strip()]
    if not urls:
        raise ValueError("no AMQP URL")
    parsed = [URL(u) for u in urls]
    for url in parsed:
        if url.scheme not in ("amqp", "amqps") or not url.host:
            raise ValueError(f"not an AMQP URL: {url.with_password('***')}")
    first = parsed[0]
    for url in parsed[1:]:
        if (url.scheme, url.user, url.password, url.path, url.query_string) != (
            first.scheme, first.user, first.password, first.path, first.query_string,
        ):  # fmt: skip
            raise ValueError(
                "the URLs of a cluster differ only in host and port: "
                f"{first.with_password('***')} and {url.with_password('***')}"
            )
    if len({(u.host, u.port) for u in parsed}) != len(parsed):
        raise ValueError("an address is listed twice in EVENTSHOP_AMQP_URL")
    return urls
