"""Our refusal restored over LiteLLM's rebuilt one, on the handlers that drop it (``_edge.refusal_slot``).

For each HTTP request this middleware opens a refusal slot. When the answer is an error (status >= 400)
and the slot holds a refusal made through the edge, the answer becomes that refusal: its status, our
body and headers (the request id and any ``x-ratelimit-*`` / ``retry-after`` kept). An answer that already is
ours passes unchanged in effect; successes are never touched.
"""

from __future__ import annotations

import json

from .._edge import refusal_slot
from ._asgi import HttpMiddleware, Message, Receive, Scope, Send

_REPLACED = (b"content-length", b"content-type", b"retry-after")


class RefusalRestore(HttpMiddleware):
    """ASGI middleware: puts the request's remembered refusal in place of LiteLLM's error answer."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        with refusal_slot() as slot:
            held: Message | None = None

            async def restoring(message: Message) -> None:
                nonlocal held
                if message["type"] == "http.response.start" and int(message["status"]) >= 400 and slot:
                    held = message
                    return
                if held is None or message["type"] != "http.response.body":
                    await send(message)
                    return
                if message.get("more_body", False):
                    return  # LiteLLM's body is replaced, not sent
                err = slot[0]
                body = json.dumps(err.to_openai()).encode()
                headers = [(k, v) for k, v in held.get("headers", []) if k.lower() not in _REPLACED]
                headers += [(k.encode(), v.encode()) for k, v in err.headers().items()]
                headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": err.status, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})

            await self.app(scope, receive, restoring)
