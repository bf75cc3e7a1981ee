"""The gateway: the only public API (/api/v1, OpenAPI at /docs). It owns no data.

It authenticates callers (JWT + a session in Redis, so a logout really revokes a token), limits
request rates (Redis), validates bodies, and forwards each request over HTTP to the service
that owns it with the caller's identity (X-User-Id, X-User-Role, X-User-Email) and the
correlation id. It imports no service: services are reached only over HTTP.

    auth.py       tokens and sessions: login issues, every request checks, logout revokes
    ratelimit.py  fixed-window counters per user and per client IP
    upstream.py   the HTTP clients to the services, and relaying their answers
    api.py        the public routes and the middleware around them
    settings.py   EVENTSHOP_GATEWAY_* settings
    service.py    the composition root (`definition`)
"""
