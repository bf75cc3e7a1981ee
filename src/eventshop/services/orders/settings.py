"""orders' settings (env prefix EVENTSHOP_ORDERS_)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrdersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_ORDERS_", extra="ignore")

    #: an order not final this long after it was placed is cancelled (reason "timeout")
    timeout_s: float = Field(default=30.0, ge=0)
    #: orders placed in one transaction at most: the POSTs that arrive while one group is being
    #: written go together in the next (platform/grouping.py; 1: each order alone)
    place_group_max: int = Field(default=32, ge=1, le=1_000)
    #: how often the timeout scanner looks for orders past their deadline
    timeout_scan_interval_s: float = Field(default=0.5, gt=0)
    #: orders timed out per scanner transaction
    timeout_scan_batch: int = Field(default=100, ge=1, le=10_000)

    #: snapshot an order's state every this many events of its stream (0: never). Orders'
    #: streams end within 7 events, and loading 10 events costs about what loading a snapshot
    #: does (`eventshop bench eventstore`), so snapshots are off unless streams grow long.
    snapshot_every: int = Field(default=0, ge=0)
    #: events per transaction of the projections' live subscriptions
    projection_batch: int = Field(default=1_000, ge=1, le=100_000)
    #: how often an idle projection subscription looks for new events
    projection_poll_s: float = Field(default=0.2, gt=0)

    @property
    def timeout(self) -> timedelta:
        return timedelta(seconds=self.timeout_s)
