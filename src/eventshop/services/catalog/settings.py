"""catalog's settings (env prefix EVENTSHOP_CATALOG_), validated at start."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CatalogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_CATALOG_", extra="ignore")

    #: lifetime of every cached product and list page; also bounds how long a cache entry
    #: written from a stale read could survive if every other guard failed (see adapters.py)
    cache_ttl_s: int = Field(default=60, ge=1, le=86_400)
    #: how long one Redis call may take before the read falls back to the database: a cache
    #: that hangs must not make the catalog slower than having no cache
    cache_timeout_s: float = Field(default=0.5, gt=0, le=10)
    #: prefix of every Redis key the catalog writes (tests use a random one)
    cache_prefix: str = Field(default="eventshop:catalog", min_length=1, max_length=100)
