"""The adaptations of LiteLLM's own behaviour, installed once by ``gateway.build_gateway``.

``install()`` applies the first two (idempotent); the gateway adds the third with its own callback:

- ``keep_gateway_errors()``: every refusal keeps its stable ``code`` on LiteLLM's auth error path;
- ``skip_metrics_auth_middleware()``: LiteLLM's ``PrometheusAuthMiddleware`` leaves ``/metrics`` to our route;
- ``on_app_shutdown(callback)``: the gateway's own shutdown (traces flushed) runs in LiteLLM's.

**The auth error path.** LiteLLM refuses some request fields (``api_base``, ``user_config``, ``model_list``, ...) in its own
``pre_db_read_auth_checks``, before our auth function runs. Our access hook's failure hook replaces that
error, but LiteLLM only accepts an ``HTTPException`` as a replacement and then rebuilds it as a plain
``ProxyException`` whose ``code`` is the HTTP status (``"400"``), losing ours (``invalid_request``).

``keep_gateway_errors()`` wraps ``litellm.proxy.auth.auth_exception_handler._as_proxy_exception`` (measured on
LiteLLM 1.103.7; called by name, so rebinding the module attribute takes effect) so that our own
``GatewayProxyException`` passes through unchanged and LiteLLM's "Rejected Request" ``ValueError``
becomes our ``400 invalid_request`` (also without a key, where no failure hook runs); every other
exception is converted as before.
If a LiteLLM upgrade removes that function or stops calling it by name, it logs an error and changes nothing: those
refusals then answer code ``"400"`` (tests/auth/test_proxy_auth.py fails and says so).

**The metrics route.** LiteLLM's ``PrometheusAuthMiddleware`` runs custom auth on every ``/metrics``
request before any route: our auth refuses the metrics token there, and each scrape would count as a
refused request. Our route checks its own token, so the middleware's check is switched off (as the
rendered config's ``litellm_settings.require_auth_for_metrics_endpoint: false`` does too, for a proxy
whose config predates it).

**The shutdown.** LiteLLM 1.103.7's app has a lifespan of its own (``proxy_startup_event``), already running
when the gateway is built, so a shutdown handler added then never runs. Its shutdown half ends by
awaiting ``proxy_shutdown_event`` (looked up by name), after uvicorn has let the requests in flight finish:
``on_app_shutdown`` wraps that function so the gateway's callback runs first. This runs in every worker
process (each builds its own gateway), before uvicorn re-raises SIGTERM and the process dies. If an
upgrade stops calling it by name, an error is logged and traces still queued at exit are lost
(tests/observability/test_shutdown.py fails).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ._edge import GatewayProxyException, to_proxy_exception

log = logging.getLogger("litellm_cloud.auth")

_MARK = "_litellm_cloud_keeps_gateway_errors"


def install() -> bool:
    """Every adaptation; True if the auth error path keeps our codes."""
    skip_metrics_auth_middleware()
    return keep_gateway_errors()


def skip_metrics_auth_middleware() -> None:
    """Leave ``/metrics`` to our own route's token check (see the module docstring)."""
    import litellm

    litellm.require_auth_for_metrics_endpoint = False


def keep_gateway_errors() -> bool:
    """Make LiteLLM's auth error path keep our ``GatewayProxyException``; idempotent. True if active."""
    try:
        from litellm.proxy.auth import auth_exception_handler as handler
    except ImportError:  # pragma: no cover - LiteLLM without its proxy extras
        return False
    original: Callable[[Exception], Any] | None = getattr(handler, "_as_proxy_exception", None)
    caller = getattr(getattr(handler, "UserAPIKeyAuthExceptionHandler", None), "_handle_authentication_error", None)
    # Rebinding the module attribute only works while the caller looks the function up by that name.
    looked_up = "_as_proxy_exception" in getattr(getattr(caller, "__code__", None), "co_names", ())
    if original is None or not callable(original) or not looked_up:
        log.error(
            "LiteLLM's auth error path changed (auth_exception_handler._as_proxy_exception): refusals of "
            "api_base/user_config will answer code '400' instead of 'invalid_request'"
        )
        return False
    if getattr(original, _MARK, False):
        return True

    def _as_proxy_exception(e: Exception) -> Any:
        if isinstance(e, GatewayProxyException):
            return e
        from .auth.hook import litellm_refusal  # late: the auth package imports this module's siblings

        refusal = litellm_refusal(e)
        if refusal is not None:
            # Without a key the failure hook never runs, and LiteLLM's own conversion of this ValueError
            # imports prisma (absent here): a 500 with a traceback (found by tests/api/test_fuzz.py).
            return to_proxy_exception(refusal)
        return original(e)

    setattr(_as_proxy_exception, _MARK, True)
    handler._as_proxy_exception = _as_proxy_exception  # type: ignore[attr-defined]
    return True


_SHUTDOWN_MARK = "_litellm_cloud_shutdown"


def on_app_shutdown(callback: Callable[[], Awaitable[None]]) -> bool:
    """Run ``callback`` at the start of LiteLLM's app shutdown (after requests drained); True if active.

    Installing again replaces the callback (one gateway per process).
    """
    try:
        from litellm.proxy import proxy_server
    except ImportError:  # pragma: no cover - LiteLLM without its proxy extras
        return False
    current = getattr(proxy_server, "proxy_shutdown_event", None)
    original = getattr(current, _SHUTDOWN_MARK, current)
    lifespan = getattr(getattr(proxy_server, "proxy_startup_event", None), "__wrapped__", None)
    looked_up = "proxy_shutdown_event" in getattr(getattr(lifespan, "__code__", None), "co_names", ())
    if original is None or not callable(original) or not looked_up:
        log.error(
            "LiteLLM's shutdown changed (proxy_startup_event no longer awaits proxy_shutdown_event): traces "
            "still queued when the proxy stops will be lost"
        )
        return False

    async def proxy_shutdown_event(*args: Any, **kwargs: Any) -> None:
        try:
            await callback()
        except Exception:  # the rest of LiteLLM's shutdown must still run
            log.exception("gateway shutdown failed")
        await original(*args, **kwargs)

    setattr(proxy_shutdown_event, _SHUTDOWN_MARK, original)
    proxy_server.proxy_shutdown_event = proxy_shutdown_event  # type: ignore[attr-defined]
    return True
