"""The shop's services, and the one registry of them. Each folder has the same shape
(docs/SERVICES.md; tests/unit/architecture/test_service_shape.py keeps it):

    domain.py      pure rules and state machines; imports nothing of platform/ or I/O libraries
    handlers.py    every use case: event handlers and the commands HTTP calls; every `emit`
    api.py         a module-level router: HTTP in, one handler call, HTTP out
    store.py       its tables and queries (asyncpg)
    migrations/    its SQL migrations, applied at start
    service.py     the composition root: `definition` (settings, resources, handler table)

and, where a service needs them, adapters.py, jobs.py, projections.py, eventlog.py, settings.py.
What it publishes lives in eventshop.contracts.<service>. No service imports another service;
they share only eventshop.contracts.

`PORTS` is the single list of services: the gateway's upstreams, the supervisor's process list,
the AsyncAPI document and every service's port are read from it.
"""

#: every service and its HTTP port on loopback; the gateway is the only public one
PORTS: dict[str, int] = {
    "gateway": 8000,
    "users": 8001,
    "catalog": 8002,
    "inventory": 8003,
    "orders": 8004,
    "payments": 8005,
    "notifications": 8006,
    "loyalty": 8007,
    "archive": 8008,
}
#: where each service serves /metrics: its own port, but the gateway's, which is public (its
#: metrics go to an internal port of their own, never to the clients of the API)
METRICS_PORTS: dict[str, int] = {**PORTS, "gateway": 9000}

#: the services behind the gateway, in start order (the gateway starts last)
BACKENDS: tuple[str, ...] = tuple(name for name in PORTS if name != "gateway")
SMTP_SINK_PORT = 8025
#: the SMTP sink's mailbox view (eventshop.tooling.mailbox): what the platform mailed, in a browser
SMTP_SINK_HTTP_PORT = 8026
#: the operators' console (eventshop.console): the platform live in a browser, admins only
CONSOLE_PORT = 8090
