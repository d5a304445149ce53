"""Request-size limit as a pure ASGI middleware: 413 before the body is parsed.

A declared ``Content-Length`` above the cap is refused at once; a body without one (chunked)
is counted as it streams, and once past the cap whatever the app answers is replaced by 413.
"""

from __future__ import annotations

import json


class BodySizeLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send) -> None:
        body = json.dumps({"error": {
            "status": 413,
            "message": f"request body is larger than the limit of {self.max_bytes} bytes"},
        }).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    return await self._reject(send)
        state = {"seen": 0, "over": False, "replaced": False}

        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_bytes:
                    state["over"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message):
            if state["over"]:
                if not state["replaced"]:
                    state["replaced"] = True
                    await self._reject(send)
                return
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
