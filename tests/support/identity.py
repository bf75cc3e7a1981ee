"""Calls to a service's own HTTP app with a user's identity, proven as the gateway proves it.

    client = httpx.AsyncClient(transport=..., auth=ProvenIdentity(app.state.identity_key))

Every request gets the X-Identity-Proof the gateway would add (eventshop.platform.http
.sign_identity): for the user its X-User-* headers name, or for nobody when they are absent.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from eventshop.platform.http import PROOF_HEADER, sign_identity


class ProvenIdentity(httpx.Auth):
    def __init__(self, key: bytes) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if PROOF_HEADER not in request.headers:
            user_id = request.headers.get("x-user-id") or ""
            default_role = "customer" if user_id else ""
            request.headers[PROOF_HEADER] = sign_identity(
                self.key,
                method=request.method,
                path=request.url.path,
                user_id=user_id,
                role=request.headers.get("x-user-role") or default_role,
                email=request.headers.get("x-user-email") or "",
            )
        yield request
