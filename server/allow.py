"""``Allow`` headers that list every method of a path, as a pure ASGI middleware.

Starlette answers a method a path does not have with 405 and the ``Allow`` of the first route
whose path matched, so ``/v1/verifications/{id}`` (a GET route and a DELETE route) said
``Allow: GET``. Here the methods of every route matching the path are collected: ``OPTIONS``
answers 204 with them, and a method outside them answers 405 (the error body) with them
(``GET /v1/verifications/batch`` is a 405, not a lookup of a job called "batch").
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match


def allowed_methods(routes: Sequence[BaseRoute], scope) -> set[str]:
    """Methods of every route in ``routes`` whose path matches the request's path. A path
    that some route names literally (``/v1/verifications/batch``) is that resource only,
    not also a value of a parameter (``/v1/verifications/{job_id}``)."""
    matched = [route for route in routes if getattr(route, "methods", None)
               and route.matches(scope)[0] != Match.NONE]
    literal = [route for route in matched if "{" not in getattr(route, "path", "{")]
    return {method for route in (literal or matched) for method in route.methods}


class AllowedMethods:
    """OPTIONS -> 204 with ``Allow``; an unsupported method -> 405 with the full ``Allow``.

    ``routes``: the API's routes (the routers' own, whose paths carry their prefixes; paths
    no route matches are left to the framework)."""

    def __init__(self, app, routes: Sequence[BaseRoute]):
        self.app = app
        self.routes = list(routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        methods = allowed_methods(self.routes, scope)
        if not methods or scope["method"] in methods:
            return await self.app(scope, receive, send)
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        if scope["method"] == "OPTIONS":
            return await _answer(send, 204, b"", allow)
        body = json.dumps({"error": {"status": 405, "message": f"method {scope['method']} is "
                                     f"not allowed here; allowed: {allow}"}}).encode()
        return await _answer(send, 405, body, allow)


async def _answer(send, status: int, body: bytes, allow: str) -> None:
    headers = [(b"allow", allow.encode()), (b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
