"""The end-to-end benchmark (`eventshop bench orders`): orders through the whole platform.

N orders are placed over HTTP through the gateway, as shoppers would, and each one is followed
through the full saga (order.created -> inventory.reserved -> payment.requested ->
payment.succeeded -> order.confirmed, then notifications and loyalty) until its final state.

Load:
- closed loop (default): `--concurrency C` shoppers, each placing its next order as soon as
  the previous POST is answered (not when the order is final);
- open loop: `--rate R` orders/s offered whatever the platform does (Poisson or even arrivals);
  latencies count from the order's scheduled time, so a client or gateway falling behind
  shows in them (no coordinated omission);
- `--half-rate`: after the closed (or open) loop run, a second, open-loop run at half the
  rate of final states the first one reached: the time-to-final target is stated there.

What is measured, per run:
- orders/s placed (POSTs answered 202) and orders/s reaching a final state, over the whole
  run and over its steady middle (10%..90% of the final states);
- p50/p95/p99/max of the POST latency and of the time to the final state. The final state is
  observed on the broker, not by polling: the benchmark binds an exclusive, non-durable queue
  of its own to order.confirmed and order.cancelled on `eventshop.events` and timestamps each
  arrival (costs the platform one more delivery per order, reported apart);
- AMQP messages per order: the run's events are counted in the archive (every event of every
  order carries the correlation id of the POST that started it), and each event type is
  multiplied by the queues bound to it (`rabbitmqctl list_bindings`): 1 publish + N deliveries;
  the broker's share is that rate over its limit (docs/PERFORMANCE.md §2: ~37,000 persistent
  messages/s end to end on this machine);
- database work per order: write transactions (transaction ids assigned: exact, read at
  once), all transactions (pg_stat_database xact_commit, read-only ones included; PostgreSQL
  publishes these statistics late, so they are read after a wait and corrected for the
  platform's idle rate), rows written (and the tables that take most), WAL bytes and syncs,
  and what the outboxes still hold unsent once the run has settled (a stalled relay shows);
- CPU per order of every process (psutil, user + system): each service, the broker, Redis,
  PostgreSQL split by the service whose connection drives each backend, the benchmark client
  itself (reported apart), and the whole machine (what no process explains is "unattributed");
- where the time to final goes: for each confirmed order, the time between neighbouring
  events of its saga (order.created, inventory.reserved, payment.requested, payment.succeeded,
  order.confirmed), each read from the archive with the time its producer made it
  (`occurred_at`): p50/p95/p99 of each step, and of the first to the last;
- the invariants of docs/DESIGN.md §3 over the run's orders, once they have settled.

The platform: started if it is not running, with a benchmark profile (BENCH_ENV: a 5 ms payment
provider, rate limits and the fraud velocity rule out of the way, a 120 s order timeout, 1% of
requests traced) and stopped at the end. If it is running, the profile is applied with
`supervisorctl update` (which restarts the programs whose environment changed: every service,
the profile being in each one's environment) and the previous configuration is put back at the
end the same way; `--as-is` uses it untouched, and the report says which settings of the
profile it runs without. Shoppers, the 500-product catalogue and its stock are made once
and reused by later runs (they are topped up when short).

The command prints a table to stderr and one JSON object on the last line of stdout.

The modules: `config` (the options, the benchmark profile), `platform` (starting the platform
or applying the profile, and undoing it), `shop` (shoppers, catalogue, stock), `load` (the load
generator: the orders' contents, their arrivals, the POSTs), `watcher` (final states seen on
the broker), `measure` (CPU by process, database statistics, the broker's bindings), `phase`
(one run of orders, measured and settled), `report` (the JSON figures, percentiles), `tables`
(the tables for a human), `runner` (the whole benchmark) and `cli` (the command and its
options).
"""
