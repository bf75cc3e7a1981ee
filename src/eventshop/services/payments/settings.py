"""payments' settings (env prefix EVENTSHOP_PAYMENTS_)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventshop.services.payments.domain import FraudRules


class PaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_PAYMENTS_", extra="ignore")

    # -- the simulated provider ---------------------------------------------------------------
    #: how long an ordinary charge takes
    provider_latency_ms: int = Field(default=20, ge=0)
    #: how long a charge with the "tok_slow" test token takes (long enough to time an order out)
    slow_latency_ms: int = Field(default=10_000, ge=0)
    #: the share of ordinary charges declined at random
    decline_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    # -- fraud rules --------------------------------------------------------------------------
    #: a payment above this (minor units) is refused as fraud
    fraud_amount_limit_minor: int = Field(default=1_000_000, ge=0)
    #: customers' e-mail domains whose payments are refused as fraud (JSON list)
    fraud_blocked_email_domains: list[str] = Field(default_factory=lambda: ["fraud.test"])
    #: payment requests one user may make within the velocity window before fraud is called
    fraud_velocity_max_requests: int = Field(default=20, ge=1)
    #: the velocity window, in seconds
    fraud_velocity_window_s: float = Field(default=60.0, gt=0)

    # -- the charge job (jobs.py) -------------------------------------------------------------
    #: provider calls in flight at once, per process
    charge_concurrency: int = Field(default=32, ge=1, le=1_000)
    #: how often the job looks for work when it found none (work its own process queues wakes
    #: it at once)
    charge_poll_s: float = Field(default=0.1, gt=0)
    #: woken by work its own process queued, how long the job waits for more before it claims
    #: (the requests of the windows committing meanwhile go in the same claim)
    charge_gather_s: float = Field(default=0.02, ge=0)
    #: a provider call taking longer counts as failed (and is tried again)
    provider_timeout_s: float = Field(default=20.0, gt=0)
    #: a charging row claimed longer ago than this is taken over (its process died)
    charge_lease_s: float = Field(default=30.0, gt=0)
    #: provider errors before a charge is given up as failed (provider_error)
    charge_max_attempts: int = Field(default=5, ge=1)
    #: wait before a charge that met a provider error is tried again
    charge_retry_delay_s: float = Field(default=1.0, ge=0)
    #: at stop, how long calls in flight may finish before they are cancelled (their leases run
    #: out and another process charges them again, with the same idempotency key)
    charge_stop_grace_s: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def lease_outlives_a_call(self) -> PaymentsSettings:
        # a lease shorter than a call would let a second process charge a row still in flight
        if self.charge_lease_s <= self.provider_timeout_s:
            raise ValueError("charge_lease_s must be longer than provider_timeout_s")
        return self

    def fraud_rules(self) -> FraudRules:
        return FraudRules.of(
            amount_limit_minor=self.fraud_amount_limit_minor,
            blocked_email_domains=self.fraud_blocked_email_domains,
            velocity_max_requests=self.fraud_velocity_max_requests,
            velocity_window_s=self.fraud_velocity_window_s,
        )
