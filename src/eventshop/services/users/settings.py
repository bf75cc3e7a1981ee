"""users' settings (env prefix EVENTSHOP_USERS_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventshop.services.users import domain


class UsersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSHOP_USERS_", extra="ignore")

    #: comma-separated; an account registered with one of these emails is an admin. The default
    #: is for development only: in a deployment set it to addresses you control, because
    #: whoever registers first with a listed email gets the role.
    admin_emails: str = "admin@eventshop.test"

    # argon2id cost. The defaults are OWASP's minimum recommendation (19 MiB, 2 passes, 1 lane):
    # ~20 ms a hash, so a login costs little and a stolen hash still costs an attacker dearly.
    # Tests lower them to stay fast; raising them later rehashes each account at its next login.
    #: argon2id passes
    password_time_cost: int = Field(default=2, ge=1)
    #: argon2id memory, in KiB
    password_memory_kib: int = Field(default=19_456, ge=8)
    #: argon2id lanes
    password_parallelism: int = Field(default=1, ge=1)

    @property
    def admin_email_keys(self) -> frozenset[str]:
        return domain.parse_email_list(self.admin_emails)
