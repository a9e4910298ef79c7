"""One log line per refused request; none of LiteLLM's own lines for a client's mistake.

LiteLLM 1.103.7 logs every refusal at ERROR on its ``LiteLLM Proxy`` logger: the auth path (bad key,
route gate) with the exception as an argument (``auth_exception_handler.py``), the request path (model
gate, limits, an upstream 400) through ``log_llm_api_exception`` (``common_request_processing.py``),
the latter with the upstream's whole error text, tens of lines. A client could fill the logs at will.

- ``RefusalLog`` (ASGI, outermost) writes the one line: ``refused 429 rate_limited POST /v1/chat/completions
  key-1a2b3c4d5e6f rid=<x-request-id>`` at WARNING for a 4xx, at ERROR for a 5xx (whose traceback
  LiteLLM logs, once). The key is named by its hash only.
- ``ClientErrorFilter``, installed on LiteLLM's loggers by ``quiet_litellm_refusals``, drops a record
  whose exception (an argument, or ``exc_info``) carries a 4xx status. Server errors pass untouched.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..auth.hook import litellm_refusal
from ..identity import key_hash
from ._asgi import HttpMiddleware, Message, Receive, Scope, Send

log = logging.getLogger("litellm_cloud.front")

#: LiteLLM's loggers that report client errors (``litellm._logging``).
LITELLM_LOGGERS = ("LiteLLM Proxy", "LiteLLM Proxy.stdout", "LiteLLM Router", "LiteLLM")
_BODY_LIMIT = 16384  # error bodies are small; a larger one is not read for its code


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def caller(scope: Scope) -> str:
    """The key hash of the key a request presents (``no-key`` without one); never the key itself."""
    scheme, _, value = _header(scope, b"authorization").partition(" ")
    key = value.strip() if scheme.lower() == "bearer" else ""
    key = key or _header(scope, b"x-api-key").strip() or _header(scope, b"api-key").strip()
    return key_hash(key) if key else "no-key"


def error_code(body: bytes) -> str:
    """The ``error.code`` of an OpenAI-style error body, or ``-`` when it has none."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "-"
    return str(code)[:60] if code is not None else "-"


class RefusalLog(HttpMiddleware):
    """ASGI middleware: logs each answer with status >= 400 on one line."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = 0
        call_id = ""
        body = bytearray()

        async def watched(message: Message) -> None:
            nonlocal status, call_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for key, value in message.get("headers", []):
                    if key.lower() == b"x-request-id":
                        call_id = bytes(value).decode("latin-1")[:64]
            elif message["type"] == "http.response.body" and status >= 400:
                if len(body) < _BODY_LIMIT:
                    body.extend(message.get("body", b"")[: _BODY_LIMIT - len(body)])
                if not message.get("more_body", False):
                    self._log(scope, status, error_code(bytes(body)), call_id)
            await send(message)

        await self.app(scope, receive, watched)

    @staticmethod
    def _log(scope: Scope, status: int, code: str, call_id: str) -> None:
        level = logging.ERROR if status >= 500 else logging.WARNING
        path = str(scope.get("path", ""))[:100].encode("unicode_escape").decode("ascii")
        log.log(level, "refused %d %s %s %s %s rid=%s", status, code, scope.get("method", "-"), path,
                caller(scope), call_id or "-")  # fmt: skip


def client_status(exc: object) -> int | None:
    """The HTTP status an exception stands for, if it says (LiteLLM's, FastAPI's, openai's, ours)."""
    gateway_error = getattr(exc, "gateway_error", None)
    if gateway_error is not None:
        return int(gateway_error.status)
    for name in ("status_code", "code"):
        value: Any = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _is_client_error(exc: object) -> bool:
    if isinstance(exc, BaseException) and litellm_refusal(exc) is not None:
        return True  # LiteLLM's "Rejected Request" ValueError: our 400 (auth/hook.py)
    status = client_status(exc)
    return status is not None and 400 <= status < 500


class ClientErrorFilter(logging.Filter):
    """Drops LiteLLM's records about a client's mistake (an exception with a 4xx status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        candidates: list[object] = []
        if record.exc_info and record.exc_info[1] is not None:
            candidates.append(record.exc_info[1])
        args = record.args if isinstance(record.args, tuple) else ()
        candidates.extend(a for a in args if isinstance(a, BaseException))
        return not any(_is_client_error(c) for c in candidates)


_FILTER = ClientErrorFilter()


def quiet_litellm_refusals() -> None:
    """Install ``ClientErrorFilter`` on LiteLLM's loggers (idempotent)."""
    for name in LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
