"""Internal response headers, removed in the app so that the LAN deployment (no nginx) leaks none.

LiteLLM 1.103.7 answers with the upstream's address (``x-litellm-model-api-base``), the upstream's own
headers (``llm_provider-*``), the served model, cost, spend, timing, retry and version headers. None is
the client's business. Kept: ``x-litellm-call-id`` (the request id to quote to support, also in the
logs), ``x-litellm-model-id`` (the server name, ``gpu-3``: an operator's handle on the LAN, not an
address; nginx removes it for the internet, nginx/snippets/proxy.conf), ``x-ratelimit-*``,
``retry-after`` and everything that is not LiteLLM's.

Every answer carries ``x-request-id``: the one nginx sent (``$request_id``), else LiteLLM's call id, else
a new one, so any answer, our routes' included, can be found in the logs (``front/refusals.py``).
"""

from __future__ import annotations

import re
import uuid

from ._asgi import HttpMiddleware, Message, Receive, Scope, Send

#: The LiteLLM headers a client may see.
KEPT = frozenset({b"x-litellm-call-id", b"x-litellm-model-id"})
_INTERNAL_PREFIXES = (b"x-litellm-", b"llm_provider-")
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")  # a client-sent id is echoed only if it is plain


def is_internal_header(name: bytes | str) -> bool:
    """Whether a response header is internal (removed before the client sees it)."""
    raw = (name.encode("latin-1") if isinstance(name, str) else name).lower()
    return raw.startswith(_INTERNAL_PREFIXES) and raw not in KEPT


class HeaderFilter(HttpMiddleware):
    """ASGI middleware: drops ``is_internal_header`` headers from every response."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:

        incoming = next((v for k, v in scope.get("headers", []) if k.lower() == b"x-request-id"), b"")

        async def filtered(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                kept = [(k, v) for k, v in headers if not is_internal_header(k) and k.lower() != b"x-request-id"]
                call_id = next((v for k, v in headers if k.lower() == b"x-litellm-call-id"), b"")
                rid = next((i for i in (incoming, call_id) if _REQUEST_ID.fullmatch(i)), None)
                message["headers"] = [*kept, (b"x-request-id", rid or uuid.uuid4().hex.encode())]
            await send(message)

        await self.app(scope, receive, filtered)
