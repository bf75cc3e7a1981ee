"""`eventshop chaos`: break the running platform on purpose and count what was lost.

    eventshop chaos kill-services --orders 2000 --rate 20 --seed 7
    eventshop chaos all --orders 200 --json

It places orders over HTTP through the gateway (each with its Idempotency-Key, retried with
the same key on errors and time-outs, every answer recorded: `load`), injects the scenario's
faults on a schedule drawn from the seed (`faults`), lets the platform settle, then checks with
queries of its own over every service's tables, the outboxes, the parking lots and the archive,
not with the platform's code (`check`): lost, duplicated, unexpected and stuck orders, every
invariant with example ids, nothing unsent, nothing parked that was not meant to be. It prints
a table and one JSON object, and appends that object to a results file
(var/chaos/results.jsonl; `eventshop chaos-table` renders it for the README).

It runs against the process platform of this machine (`eventshop up`): it kills its processes,
the machine's RabbitMQ and PostgreSQL, and stops Redis, and starts them again with the
project's own set-up (scripts/ensure-infra.sh). With `--platform compose` it breaks the
compose project's containers instead, with the Docker CLI (`compose`, ADR 0015). Never point it
at something you care about.
"""
