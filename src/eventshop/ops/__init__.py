"""What the operator's commands read, as data: the functions `eventshop status`, `dlq`,
`events` and `trace` render, importable without the CLI (no typer), so a web page reads the
same thing the command prints (one source of truth).

- `eventshop.ops.status`: every service's readiness, queue, consumers, parked, outbox backlog.
- `eventshop.ops.parked`: the parking lots, filtered; replay and purge; a parked message as JSON.
- `eventshop.ops.events`: an event store's streams, global log, an order's timeline and its state
  as of a version or a time, the projections' positions.
- `eventshop.ops.traces`: a trace's spans as waterfall rows.

Every result has a `to_json()` (or a `*_json` function) giving what `--json` prints: snake_case
names, times in ISO 8601 UTC.
"""
