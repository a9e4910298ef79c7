"""``/playground``: a page where a customer tries a key in the browser before writing any code.

The page is three static files shipped in this package (``index.html``, ``app.js``, ``app.css``, plus a
favicon), served as they are: no build step, nothing fetched from another host. It needs no key to load
(the router carries no auth dependency, so LiteLLM never runs our custom auth or its route gate on these
paths); the key a visitor pastes stays in the page (memory, or the tab's ``sessionStorage`` if asked)
and goes only to this gateway's own API, in the ``Authorization`` header, never in a URL.

Every answer carries a strict Content-Security-Policy: scripts, styles, images and connections from
this origin only, no inline script or style, no ``<base>``, no form submission, no framing. The policy is
defined once, here (``CONTENT_SECURITY_POLICY``), and tested against the files.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "CSP_DIRECTIVES", "PATH", "SECURITY_HEADERS", "playground_router"]

#: Where the page is served; its assets live under ``PATH/``.
PATH = "/playground"

#: The page's file and each asset's file, by URL path, with its content type.
ASSETS: dict[str, tuple[str, str]] = {
    PATH: ("index.html", "text/html; charset=utf-8"),
    f"{PATH}/app.js": ("app.js", "text/javascript; charset=utf-8"),
    f"{PATH}/app.css": ("app.css", "text/css; charset=utf-8"),
    f"{PATH}/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

#: This origin only, nothing inline, no <base>, no form submission, no framing.
CSP_DIRECTIVES: tuple[str, ...] = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    # Every DOM write in app.js is textContent or an element API: a string-to-HTML sink is refused.
    "require-trusted-types-for 'script'",
)
CONTENT_SECURITY_POLICY = "; ".join(CSP_DIRECTIVES)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Small files that change with a deploy: revalidate rather than serve an old app.js to a new page.
    "Cache-Control": "no-cache",
}


def playground_router() -> APIRouter:
    """The routes serving the page and its assets (GET and HEAD, no key), read from the package once."""
    router = APIRouter()
    here = files(__name__)
    for path, (name, content_type) in ASSETS.items():
        serve = _endpoint(here.joinpath(name).read_bytes(), content_type)
        router.add_api_route(path, serve, methods=["GET", "HEAD"], include_in_schema=False)
    return router


def _endpoint(body: bytes, content_type: str) -> Callable[[], Response]:
    # A closure, not default arguments: FastAPI would read those as query parameters.
    def serve() -> Response:
        return Response(body, media_type=content_type, headers=SECURITY_HEADERS)

    return serve
