"""The shop's services. Each folder has the same shape (see docs/SERVICES.md):

    contracts live in eventshop.contracts.<service>   what it publishes
    domain.py      pure rules and state machines; imports nothing of platform/ or I/O libraries
    handlers.py    event handlers: envelope -> domain -> unit of work
    api.py         internal HTTP routes (behind the gateway)
    store.py       its tables and queries (asyncpg)
    migrations/    its SQL migrations, applied at start
    service.py     the composition root: `definition`, what it consumes and publishes

No service imports another service; they share only eventshop.contracts.
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
SMTP_SINK_PORT = 8025
