"""gateway: the public API (/api/v1 on :8000), the only service reachable from outside.

consumes  nothing
publishes nothing
HTTP      every /api/v1 route: checks the caller's token and session, rate limits, validates
          the body, and forwards to the service owning the route (api.py)

It owns no tables and handles no events, so it has no domain.py, store.py, handlers.py or
migrations/ (docs/SERVICES.md): its adapters/ hold tokens and sessions (auth), rate limits and
the upstream services' HTTP clients.
"""
