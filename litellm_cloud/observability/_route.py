"""``GET /metrics``: the Prometheus scrape endpoint, mounted ahead of LiteLLM's routes.

LiteLLM's custom auth guards only LiteLLM's own routes, so this route checks its caller itself: a
Bearer token equal to ``HEARTCODE_METRICS_TOKEN`` or to the master key (constant-time comparison).
With neither configured every scrape is refused.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from .._bearer import bearer_token
from .._config import Secret
from .._errors import InvalidApiKey
from .metrics import Metrics


def allowed(presented: str, tokens: Sequence[Secret]) -> bool:
    """Whether ``presented`` equals one of the configured (non-empty) tokens."""
    if not presented:
        return False
    given = presented.encode()
    # Compare against every token (no early exit), so timing says nothing about which one matched.
    matches = [hmac.compare_digest(given, t.reveal().encode()) for t in tokens if t]
    return any(matches)


def metrics_router(metrics: Metrics, tokens: Sequence[Secret]) -> APIRouter:
    """The router with ``GET /metrics`` guarded by ``tokens``."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if not allowed(bearer_token(request.headers) or "", tokens):
            err = InvalidApiKey("Scraping /metrics needs Authorization: Bearer <metrics token or master key>.")
            return JSONResponse(err.to_openai(), status_code=err.status, headers={"www-authenticate": "Bearer"})
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
