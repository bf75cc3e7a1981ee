"""docs/SETTINGS.md: every setting of the platform, its environment variable, type, default and
meaning, written from the pydantic-settings classes themselves (their `#:` comments are the
meanings), so the list cannot drift from the code: tests/unit/test_settings_doc.py fails when
it is stale, and when a settings class is missing from it.

    .venv/bin/eventshop settings --output docs/SETTINGS.md
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings

#: (section, "module:Class"): every settings class of the platform, in the order to read them
SETTINGS = [
    ("Every service (the platform)", "eventshop.platform.settings:PlatformSettings"),
    ("Tracing", "eventshop.platform.observability.tracing:TracingSettings"),
    ("gateway", "eventshop.services.gateway.settings:GatewaySettings"),
    ("users", "eventshop.services.users.settings:UsersSettings"),
    ("catalog", "eventshop.services.catalog.settings:CatalogSettings"),
    ("orders", "eventshop.services.orders.settings:OrdersSettings"),
    ("payments", "eventshop.services.payments.settings:PaymentsSettings"),
    ("notifications", "eventshop.services.notifications.settings:NotificationsSettings"),
    ("The SMTP sink (a developer tool)", "eventshop.tooling.smtp_sink:SmtpSinkSettings"),
    ("The operators' console", "eventshop.console.settings:ConsoleSettings"),
]

_FIELD = re.compile(r"^\s+(\w+)\s*:")


def settings_class(path: str) -> type[BaseSettings]:
    module, name = path.split(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


def _meanings(cls: type[BaseSettings]) -> dict[str, str]:
    """Each field's `#:` comment lines, joined (the attribute docs of the class's source)."""
    meanings: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif (match := _FIELD.match(line)) and match.group(1) in cls.model_fields:
            if pending:  # `#:` documents the attribute right after it (as Sphinx reads it)
                meanings[match.group(1)] = " ".join(pending)
            pending = []
        elif not stripped.startswith("#"):
            pending = []
    return meanings


def _default(cls: type[BaseSettings], name: str) -> str:
    field = cls.model_fields[name]
    if field.default_factory is not None:
        if name == "amqp_url":  # made from this machine's secrets: never printed
            return "(the operator's user, when set up)"
        value: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if isinstance(value, SecretStr):
        return "(secret)"
    if value is None:
        return "unset"
    return f"`{value!r}`".replace("|", "\\|")


def _type(cls: type[BaseSettings], name: str) -> str:
    annotation = cls.model_fields[name].annotation
    text = getattr(annotation, "__name__", None) or str(annotation)
    for noise in ("typing.", "pydantic.types."):
        text = text.replace(noise, "")
    return text.replace("|", "\\|")


def settings_markdown() -> str:
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable (pydantic-settings; lists and maps as JSON).",
        "The environment always wins: `eventshop up` gives a service the demo's values only",
        "where the environment is silent. Generated from the settings classes by",
        "`eventshop settings --output docs/SETTINGS.md`; a test fails when this file is stale.",
    ]
    for section, path in SETTINGS:
        cls = settings_class(path)
        prefix = str(cls.model_config.get("env_prefix", ""))
        meanings = _meanings(cls)
        lines += [
            "",
            f"## {section}",
            "",
            f"`{path.replace(':', '.')}`",
            "",
            "| variable | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for name in cls.model_fields:
            meaning = meanings.get(name, "").replace("|", "\\|")
            lines.append(
                f"| `{prefix}{name.upper()}` | {_type(cls, name)} | {_default(cls, name)}"
                f" | {meaning} |"
            )
    return "\n".join(lines) + "\n"
