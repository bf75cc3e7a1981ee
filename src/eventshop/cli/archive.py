"""`eventshop archive replay`: re-deliver archived events to one service's queue, as an operator.

    eventshop archive replay --service loyalty --type order.confirmed --since 2026-12-05T10:00Z
    eventshop archive replay --service inventory --correlation-id 5f0c... --dry-run

The archive answers only callers the gateway vouches for; the operator's command signs its own
identity (an admin named `operator`) with the installation's internal key, as the gateway does,
and calls the archive's internal port (EVENTSHOP_SERVICE_URLS for another place). It counts
first and asks before sending anything, unless --yes. Over HTTP, admins have the same as
`POST /api/v1/events/replay` at the gateway.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import httpx
import typer
from rich.console import Console

from eventshop.platform.http import CORRELATION_HEADER, PROOF_HEADER, sign_identity
from eventshop.platform.settings import PlatformSettings
from eventshop.tooling.supervise import service_url

console = Console(stderr=True)
archive_app = typer.Typer(help="the event archive: replay to a service", no_args_is_help=True)
OPERATOR = {"X-User-Id": "operator", "X-User-Role": "admin", "X-User-Email": "operator@localhost"}


def _call(body: dict[str, Any]) -> dict[str, Any]:
    headers = {
        **OPERATOR,
        CORRELATION_HEADER: f"operator-replay-{uuid.uuid4().hex[:12]}",
        PROOF_HEADER: sign_identity(
            PlatformSettings().identity_key(),
            method="POST",
            path="/replay",
            user_id=OPERATOR["X-User-Id"],
            role=OPERATOR["X-User-Role"],
            email=OPERATOR["X-User-Email"],
        ),
    }
    try:
        answer = httpx.post(
            f"{service_url('archive')}/replay", json=body, headers=headers, timeout=120
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]the archive did not answer: {exc}[/]")
        raise typer.Exit(1) from None
    if answer.status_code != 200:
        console.print(f"[red]the archive refused ({answer.status_code}): {answer.text[:500]}[/]")
        raise typer.Exit(1)
    found: dict[str, Any] = answer.json()
    return found


@archive_app.command("replay")
def replay(
    service: str = typer.Option(
        ..., "--service", "-s", help="the one service whose queue gets them"
    ),
    event_type: str | None = typer.Option(None, "--type", "-t", help="a type, or a.* (one word)"),
    correlation_id: str | None = typer.Option(None, "--correlation-id", "-c"),
    aggregate_id: str | None = typer.Option(None, "--aggregate-id"),
    since: datetime | None = typer.Option(None, "--since", help="occurred at or after (ISO)"),
    until: datetime | None = typer.Option(None, "--until", help="occurred before (ISO)"),
    limit: int = typer.Option(1_000, min=1, max=100_000, help="at most this many, oldest first"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count only"),
    yes: bool = typer.Option(False, "--yes", "-y", help="send without asking"),
) -> None:
    """Re-deliver matching archived events, in archive order, to one service's queue (its inbox
    drops what it already handled): after a fix, to rebuild its state, to feed a new service."""
    body: dict[str, Any] = {
        "service": service,
        "type": event_type,
        "correlation_id": correlation_id,
        "aggregate_id": aggregate_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "limit": limit,
    }
    body = {k: v for k, v in body.items() if v is not None}
    counted = _call({**body, "dry_run": True})
    console.print(f"{counted['matched']} archived event(s) match")
    if dry_run or not counted["matched"]:
        print(json.dumps({**counted, "dry_run": True}))
        return
    if not yes:
        typer.confirm(f"Replay {counted['matched']} event(s) to {service}?", abort=True, err=True)
    done = _call(body)
    console.print(f"replayed {done['replayed']} event(s) to {service}")
    print(json.dumps({**done, "dry_run": False}))
