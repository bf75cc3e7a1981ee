"""The bus benchmark (`eventshop bench bus`): events/s through outbox, broker and inbox.

Two measurements in one run, on the same broker, so the ratio between them means something
on a shared, noisy machine:

1. the raw rates of the chosen client (aio-pika, no database): 300-byte persistent messages
   on one quorum queue, up to 1,000 publishes awaiting their confirms, prefetch 1,000, acks
   with multiple=True every 50 messages:
   - publish: one process publishes N messages, each confirmed;
   - consume: one process drains that backlog;
   - end to end: a publisher and a consumer process at the same time, run twice, with
     windows of 1,000 publishes gathered and with a sliding window of 1,000 (a task per
     publish); the faster is `raw_e2e_per_s`, the stricter yardstick.
2. end to end through the platform: a writer process commits N events through the outbox
   (UnitOfWork, 100 events a transaction), a relay process (the real `BusNode` of the
   producing service: OutboxRelay + Publisher) publishes them, a consumer process (the real
   `BusNode` of the consuming service: Consumer with its inbox, prefetch 1,000) handles them,
   one `effects` row per event (no unique key, so a duplicate effect would show), a window's
   rows in one INSERT (`BatchHandler`). The time runs from the writer's start to the commit
   of the last effect; each stage also reports when it had done all N (the last one paced
   the run). Then `lost` (committed events with no effect) and `duplicate_effects` (rows
   beyond one per event) are counted in the database.

Every process runs on uvloop. The CPU time of each (writer, relay, consumer, publisher, the
broker's beam.smp, and the postgres backends serving the benchmark's connections plus the
server's auxiliary processes) is read with psutil before and after each phase; what other
processes spent meanwhile is reported too (a run where they took >10% is flagged NOISY).
Names are random per run (exchange, queues, schemas) and deleted at the end.

The command prints tables to stderr and one JSON object on the last line of stdout.
Child processes are `python -m eventshop.bench.bus <role>`; they read their configuration
from stdin (it holds passwords, so never from the command line), say `ready`, wait for `go` on
stdin, and print their result as one JSON line.

The modules: `config` (the run's settings and names), `protocol` (the child's side and the
parent's side of that exchange), `raw` and `roles` (what each child process does), `measure`
(CPU by process and role), `phases` (one phase each, timed; `run_bench`), `resources` (the
run's schemas, queues and exchange, created and removed), `report` (the JSON figures and the
tables) and `cli` (the command and its options). Importing this package registers nothing:
the benchmark's event type is registered by `roles`, which only the child processes import.
"""
