"""What stands in front of LiteLLM's own handlers, wrapped around its ASGI app when the gateway mounts.

    _asgi.py     the ASGI types and HttpMiddleware, the base of the middlewares below
    body.py      the body guard: our POST routes take one JSON object, UTF-8, under a size limit
    headers.py   internal response headers (upstream address, cost, spend, provider headers) removed
    restore.py   our refusal restored where a LiteLLM handler rebuilt it (``POST /v1/completions``)
    refusals.py  one log line per refused request (status, code, route, key hash); LiteLLM's own
                 per-refusal ERROR lines filtered out

Order, outermost first: refusal log -> header filter -> refusal restore -> body guard -> LiteLLM's
middleware and routes.
So the guard's own answers are logged and filtered like LiteLLM's.

LiteLLM builds its middleware stack on the first ASGI event (the lifespan start, before our
``custom_auth`` is imported), so ``app.add_middleware`` would be refused: ``install`` wraps the built
stack instead, which Starlette calls for every later request.
"""

from __future__ import annotations

from typing import Any

from .body import GUARDED_PATHS, MAX_BODY_BYTES, BodyGuard
from .headers import HeaderFilter, is_internal_header
from .refusals import RefusalLog, quiet_litellm_refusals
from .restore import RefusalRestore

__all__ = ["GUARDED_PATHS", "MAX_BODY_BYTES", "BodyGuard", "HeaderFilter", "RefusalLog", "RefusalRestore", "install", "is_internal_header",
           "quiet_litellm_refusals"]  # fmt: skip

_MARK = "_litellm_cloud_front"


def install(app: Any, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Wrap ``app``'s middleware stack in the front (idempotent)."""
    stack = app.middleware_stack
    if stack is None:
        stack = app.middleware_stack = app.build_middleware_stack()
    if getattr(stack, _MARK, False):
        return
    front = RefusalLog(HeaderFilter(RefusalRestore(BodyGuard(stack, max_bytes=max_body_bytes))))
    setattr(front, _MARK, True)
    app.middleware_stack = front
    quiet_litellm_refusals()
